#!/usr/bin/env python3
"""Build a CI-like workspace for the runtime benchmark, deterministically.

usage: gen-workspace.py ROOT N_SMALL N_LARGE LARGE_MIB
       gen-workspace.py --node-modules ROOT N_FILES [AVG_BYTES]

node_modules/: N_SMALL source-like text files (2-18 KB, unique token streams
               from a shared vocabulary, so they compress like code; 5% are
               copies of another file, as duplicated packages are)
target/:       N_LARGE files of LARGE_MIB MiB each, alternating 1 MiB blocks of
               random bytes (compiled/compressed artefacts) and unique text

--node-modules: a node_modules-like tree of N_FILES small files (average
               AVG_BYTES, default 2600): packages of 4-60 files each
               (package.json, README.md, LICENSE, lib/ and dist/ .js, .d.ts,
               .map), licence texts and boilerplate shared between packages,
               code from a shared vocabulary, some nested node_modules and
               .bin symlinks, like an npm install.
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


def node_modules(root, n_files, avg):
    rng = random.Random(7)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10))) for _ in range(8000)]
    vocab += ["const", "function", "return", "exports", "require(", "module", "if", "var", "=", "(", ")", "{", "}", ";\n", ",", "=>", "."]
    licences = [("MIT License\n\nCopyright (c) %d {author}\n\n" % (2010 + i) + " ".join(rng.choices(vocab, k=160))).encode() for i in range(6)]

    def code(nbytes):
        return " ".join(rng.choices(vocab, k=nbytes // 6 + 8)).encode()[:nbytes]

    nm = os.path.join(root, "node_modules")
    written = 0
    pkg = 0
    while written < n_files:
        name = f"pkg-{pkg:06d}"
        base = os.path.join(nm, name) if pkg % 10 else os.path.join(nm, f"@scope{pkg % 97}", name)
        if pkg % 25 == 24:
            base = os.path.join(nm, f"pkg-{pkg - 1:06d}", "node_modules", name)
        os.makedirs(os.path.join(base, "lib"), exist_ok=True)
        os.makedirs(os.path.join(base, "dist"), exist_ok=True)
        files = {
            "package.json": ('{\n  "name": "%s",\n  "version": "1.%d.0",\n  "main": "lib/index.js",\n  "license": "MIT"\n}\n' % (name, pkg % 13)).encode(),
            "LICENSE": rng.choice(licences).replace(b"{author}", name.encode()),
            "README.md": b"# " + name.encode() + b"\n\n" + code(rng.randint(200, 3 * avg)),
        }
        for k in range(rng.randint(1, 57)):
            ext = rng.choice([".js", ".js", ".js", ".d.ts", ".js.map", ".cjs"])
            sub = "lib" if k % 2 else "dist"
            files[f"{sub}/m{k}{ext}"] = code(max(40, int(rng.expovariate(1 / avg))))
        for rel, data in files.items():
            if written >= n_files:
                break
            with open(os.path.join(base, rel), "wb") as f:
                f.write(data)
            written += 1
        if pkg % 7 == 0:
            b = os.path.join(nm, ".bin")
            os.makedirs(b, exist_ok=True)
            link = os.path.join(b, name)
            if not os.path.lexists(link):
                os.symlink(os.path.relpath(os.path.join(base, "lib", "index.js"), b), link)
        pkg += 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--node-modules":
        node_modules(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 2600)
    else:
        main()
