import { expect, test } from "vitest";
import { words } from "../src/index.js";

test("splits words", () => {
  expect(words(" a  b c ")).toEqual(["a", "b", "c"]);
});
