#!/usr/bin/env python3
"""Build a CI-like workspace for the runtime benchmark, deterministically.

usage: gen-workspace.py ROOT N_SMALL N_LARGE LARGE_MIB

node_modules/: N_SMALL source-like text files (2-18 KB, unique token streams
               from a shared vocabulary, so they compress like code; 5% are
               copies of another file, as duplicated packages are)
target/:       N_LARGE files of LARGE_MIB MiB each, alternating 1 MiB blocks of
               random bytes (compiled/compressed artefacts) and unique text
"""
import os
import random
import sys


def main():
    root, n_small, n_large, large_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(42)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 12))) for _ in range(20000)]
    vocab += ["const", "function", "return", "export", "import", "if", "let", "var", "=", "(", ")", "{", "}", ";\n", ",", "=>", "."]

    def text(nbytes):
        # ~6.5 bytes per token on average
        words = rng.choices(vocab, k=nbytes // 6 + 16)
        return " ".join(words).encode()[:nbytes]

    nm = os.path.join(root, "node_modules")
    written = []
    for i in range(n_small):
        d = os.path.join(nm, f"pkg{i // 100:03d}", "lib" if i % 3 else "dist")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, f"file{i}.js")
        if written and rng.random() < 0.05:
            data = open(rng.choice(written), "rb").read()
        else:
            data = f"// module {i}\n".encode() + text(rng.randint(2000, 18000))
        with open(path, "wb") as f:
            f.write(data)
        written.append(path)
    big = os.path.join(root, "target")
    os.makedirs(big, exist_ok=True)
    block = 1 << 20
    for k in range(n_large):
        with open(os.path.join(big, f"blob{k}.bin"), "wb") as f:
            for b in range(large_mib):
                f.write(os.urandom(block) if (b + k) % 2 == 0 else text(block))


if __name__ == "__main__":
    main()
