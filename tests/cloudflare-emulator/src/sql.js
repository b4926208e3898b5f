// Splits an SQL text into statements the way D1's /query executes a multi-statement body.
// Understands quotes ('', "", ``, []), -- and /* */ comments, and CREATE TRIGGER ... BEGIN ... END
// bodies whose inner semicolons do not end the statement.

export function splitSql(text) {
  const out = [];
  let cur = "";
  let i = 0;
  let depth = 0; // BEGIN ... END nesting inside CREATE TRIGGER
  let word = "";
  let words = []; // leading keywords of the current statement
  const flushWord = () => {
    if (!word) return;
    const w = word.toUpperCase();
    if (words.length < 4) words.push(w);
    const isTrigger = words.includes("TRIGGER") && words[0] === "CREATE";
    if (isTrigger && (w === "BEGIN" || (w === "CASE" && depth > 0))) depth++;
    if (isTrigger && w === "END" && depth > 0) depth--;
    word = "";
  };
  while (i < text.length) {
    const c = text[i];
    const n = text[i + 1];
    if (c === "-" && n === "-") {
      flushWord();
      const end = text.indexOf("\n", i);
      i = end === -1 ? text.length : end + 1;
      cur += " ";
      continue;
    }
    if (c === "/" && n === "*") {
      flushWord();
      const end = text.indexOf("*/", i + 2);
      i = end === -1 ? text.length : end + 2;
      cur += " ";
      continue;
    }
    if (c === "'" || c === '"' || c === "`" || c === "[") {
      flushWord();
      const close = c === "[" ? "]" : c;
      let j = i + 1;
      while (j < text.length) {
        if (text[j] === close) {
          if (close !== "]" && text[j + 1] === close) {
            j += 2;
            continue;
          }
          break;
        }
        j++;
      }
      cur += text.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    if (/[A-Za-z_]/.test(c) || (word && /[0-9$]/.test(c))) {
      word += c;
      cur += c;
      i++;
      continue;
    }
    flushWord();
    if (c === ";" && depth === 0) {
      if (cur.trim()) out.push(cur.trim());
      cur = "";
      words = [];
      i++;
      continue;
    }
    cur += c;
    i++;
  }
  flushWord();
  if (cur.trim()) out.push(cur.trim());
  return out;
}
