#!/usr/bin/env python3
"""Build a CI-like workspace for the runtime benchmark, deterministically.

small: N text files (JS/JSON-like, ~10 KB each) in a node_modules-shaped tree
large: K files of partly compressible data (random blocks mixed with text)
"""
import os
import random
import sys

def main():
    root, n_small, n_large, large_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(42)
    words = [("".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 12)))) for _ in range(5000)]
    corpus_lines = []
    for i in range(60000):
        kw = rng.choice(["const", "function", "return", "export", "import", "if", "let", "var"])
        corpus_lines.append(f"{kw} {rng.choice(words)} = {rng.choice(words)}({rng.choice(words)}, {rng.randint(0, 99999)});\n")
    corpus = "".join(corpus_lines).encode()
    nm = os.path.join(root, "node_modules")
    for i in range(n_small):
        d = os.path.join(nm, f"pkg{i // 100:03d}", "lib" if i % 3 else "dist")
        os.makedirs(d, exist_ok=True)
        size = rng.randint(2000, 18000)
        start = rng.randint(0, len(corpus) - size - 1)
        with open(os.path.join(d, f"file{i}.js"), "wb") as f:
            f.write(f"// module {i}\n".encode())
            f.write(corpus[start:start + size])
    big = os.path.join(root, "target")
    os.makedirs(big, exist_ok=True)
    block = 1 << 20
    for k in range(n_large):
        with open(os.path.join(big, f"blob{k}.bin"), "wb") as f:
            for b in range(large_mib):
                if (b + k) % 2 == 0:
                    f.write(os.urandom(block))
                else:
                    start = rng.randint(0, len(corpus) - block - 1)
                    f.write(corpus[start:start + block])

if __name__ == "__main__":
    main()
