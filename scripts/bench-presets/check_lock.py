#!/usr/bin/env python3
"""Check that what is installed in a workspace is exactly its lock file.

    check_lock.py KIND WORKSPACE

KIND: npm, pnpm, yarn-classic, yarn-berry, bun (node_modules against the
lock file), cargo (the build is fresh with exactly the locked crates), pip
(.venv against requirements.txt), uv (.venv against uv.lock).

For the node package managers:
  1. every package installed anywhere in node_modules has a name and version
     that the lock file lists (a package the lock no longer lists, such as a
     removed dependency kept by a restored snapshot, fails);
  2. every direct dependency of package.json is installed at
     node_modules/NAME with the version the lock file gives it;
  3. every package the lock file lists for this platform (linux, x64, glibc)
     is installed somewhere (none missing).
Used by scripts/bench-presets.sh and scripts/test-presets.sh; prints what
differs and exits 1, or prints a one-line summary.
"""

import json
import os
import re
import subprocess
import sys

OS, CPU, LIBC = "linux", "x64", "glibc"
FOREIGN = re.compile(
    r"(darwin|win32|windows|freebsd|android|sunos|openbsd|netbsd|aix|openharmony|wasm32|"
    r"arm64|aarch64|arm|ia32|ppc64|s390x|riscv64|loong64|mips64el|musl)"
)


# Packages for another platform whose names do not say so. yarn.lock v1 has
# no os/cpu fields, and yarn 1 skips an optional dependency whose package.json
# excludes this platform: fsevents declares "os": ["darwin"].
OTHER_PLATFORM = {"fsevents"}


def fail(msgs):
    for m in msgs:
        print(m)
    sys.exit(1)


def platform_ok(os_list=None, cpu_list=None, libc_list=None):
    def ok(values, mine):
        if not values:
            return True
        values = [values] if isinstance(values, str) else values
        if any(v == "!" + mine for v in values):
            return False
        positive = [v for v in values if not v.startswith("!")]
        return not positive or mine in positive

    return ok(os_list, OS) and ok(cpu_list, CPU) and ok(libc_list, LIBC)


def split_name_version(spec):
    """'@a/b@1.2.3' -> ('@a/b', '1.2.3')."""
    at = spec.rindex("@", 1)
    return spec[:at], spec[at + 1 :]


# ---- what the lock files list: {(name, version): for_this_platform} -------------------------


def lock_npm(ws):
    lock = json.load(open(os.path.join(ws, "package-lock.json")))
    out = {}
    for key, v in lock["packages"].items():
        if not key or v.get("link"):
            continue
        name = v.get("name") or key.rsplit("node_modules/", 1)[1]
        here = platform_ok(v.get("os"), v.get("cpu"), v.get("libc"))
        out[(name, v["version"])] = out.get((name, v["version"]), False) or here
    return out


def lock_pnpm(ws):
    import yaml

    lock = yaml.safe_load(open(os.path.join(ws, "pnpm-lock.yaml")))
    out = {}
    for key, v in (lock.get("packages") or {}).items():
        name, version = split_name_version(key)
        version = version.split("(")[0]
        v = v or {}
        out[(name, version)] = platform_ok(v.get("os"), v.get("cpu"), v.get("libc"))
    return out


def lock_yarn_classic(ws):
    out = {}
    names = []
    for line in open(os.path.join(ws, "yarn.lock")):
        if line.startswith("#") or not line.strip():
            continue
        if not line.startswith(" "):
            first = line.rstrip().rstrip(":").split(",")[0].strip().strip('"')
            names = [split_name_version(first)[0]]
        elif line.startswith("  version "):
            version = line.split(None, 1)[1].strip().strip('"')
            for n in names:
                # yarn.lock has no platform fields: a name that says another
                # platform is not required to be installed.
                out[(n, version)] = not (FOREIGN.search(n.split("/")[-1]) or n in OTHER_PLATFORM)
    return out


def lock_yarn_berry(ws):
    import yaml

    lock = yaml.safe_load(open(os.path.join(ws, "yarn.lock")))
    out = {}
    for key, v in lock.items():
        if key == "__metadata" or "@workspace:" in v.get("resolution", ""):
            continue
        name = v["resolution"].rsplit("@npm:", 1)[0]
        cond = v.get("conditions", "")
        here = True
        for part in cond.split("&"):
            part = part.strip()
            if "=" in part:
                k, val = part.split("=", 1)
                here = here and {"os": OS, "cpu": CPU, "libc": LIBC}.get(k) == val
        out[(name, str(v["version"]))] = here
    return out


def lock_bun(ws):
    text = open(os.path.join(ws, "bun.lock")).read()
    text = re.sub(r",(\s*[}\]])", r"\1", text)
    lock = json.loads(text)
    out = {}
    for key, v in lock["packages"].items():
        name, version = split_name_version(v[0])
        meta = next((x for x in v[1:] if isinstance(x, dict)), {})
        out[(name, version)] = platform_ok(meta.get("os"), meta.get("cpu"), meta.get("libc"))
    return out


# ---- what is installed ---------------------------------------------------------------------


def installed_node(ws, pnpm):
    found = []  # (path, name, version)

    def package_dirs(nm):
        try:
            entries = sorted(os.listdir(nm))
        except (FileNotFoundError, NotADirectoryError):
            return
        for e in entries:
            if e.startswith("."):
                continue
            p = os.path.join(nm, e)
            if e.startswith("@"):
                for s in sorted(os.listdir(p)):
                    yield os.path.join(p, s), f"{e}/{s}"
            else:
                yield p, e

    def walk(nm):
        for p, name in package_dirs(nm):
            if os.path.islink(p):
                continue
            pj = os.path.join(p, "package.json")
            if os.path.isfile(pj):
                found.append((p, name, json.load(open(pj)).get("version")))
            walk(os.path.join(p, "node_modules"))

    root = os.path.join(ws, "node_modules")
    if pnpm:
        store = os.path.join(root, ".pnpm")
        for entry in sorted(os.listdir(store)) if os.path.isdir(store) else []:
            if entry != "node_modules" and os.path.isdir(os.path.join(store, entry, "node_modules")):
                walk(os.path.join(store, entry, "node_modules"))
    else:
        walk(root)
    return found


def check_node(kind, ws):
    lock = {
        "npm": lock_npm,
        "pnpm": lock_pnpm,
        "yarn-classic": lock_yarn_classic,
        "yarn-berry": lock_yarn_berry,
        "bun": lock_bun,
    }[kind](ws)
    errors = []
    installed = installed_node(ws, kind == "pnpm")
    have = set()
    for path, name, version in installed:
        have.add((name, version))
        if (name, version) not in lock:
            errors.append(f"installed but not in the lock file: {name}@{version} ({os.path.relpath(path, ws)})")
    pkg = json.load(open(os.path.join(ws, "package.json")))
    direct = {**pkg.get("dependencies", {}), **pkg.get("devDependencies", {})}
    for name, want in direct.items():
        pj = os.path.join(ws, "node_modules", name, "package.json")
        if not os.path.isfile(pj):
            errors.append(f"direct dependency {name} is not installed")
            continue
        got = json.load(open(pj)).get("version")
        if (name, got) not in lock or (re.fullmatch(r"[0-9][^ <>=^~|]*", want) and got != want):
            errors.append(f"direct dependency {name}: installed {got}, package.json/lock file want {want}")
    for (name, version), here in sorted(lock.items()):
        if here and (name, version) not in have:
            errors.append(f"in the lock file but not installed: {name}@{version}")
    if errors:
        fail(errors)
    print(f"{kind}: {len(installed)} installed packages, all in the lock file; {len(direct)} direct dependencies at their locked versions")


def venv_missing_files(ws):
    """Files a distribution's RECORD lists that are not in .venv (a restore
    that left something out); pip, setuptools and wheel themselves aside."""
    code = (
        "import importlib.metadata as m, json, os\n"
        "out = []\n"
        "for d in m.distributions():\n"
        "    if d.metadata['Name'].lower() in ('pip', 'setuptools', 'wheel'):\n"
        "        continue\n"
        "    for f in d.files or []:\n"
        "        p = str(d.locate_file(f))\n"
        "        if '__pycache__' not in p and not p.endswith('.pyc') and not os.path.exists(p):\n"
        "            out.append(d.metadata['Name'] + ': ' + str(f))\n"
        "print(json.dumps(out))"
    )
    out = subprocess.run(
        [os.path.join(ws, ".venv/bin/python"), "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return [f"installed package file missing: {m}" for m in json.loads(out)]


def venv_distributions(ws):
    code = (
        "import importlib.metadata as m, json\n"
        "print(json.dumps(sorted({(d.metadata['Name'], d.version) for d in m.distributions()})))"
    )
    out = subprocess.run(
        [os.path.join(ws, ".venv/bin/python"), "-c", code], capture_output=True, text=True, check=True
    ).stdout
    norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
    return {(norm(n), v) for n, v in json.loads(out) if norm(n) not in ("pip", "setuptools", "wheel")}, norm


def check_pip(ws):
    have, norm = venv_distributions(ws)
    want = set()
    for line in open(os.path.join(ws, "requirements.txt")):
        line = line.split("#")[0].strip()
        if line:
            n, v = line.split("==")
            want.add((norm(n), v.strip()))
    errors = venv_missing_files(ws)
    if have != want or errors:
        fail([f"installed but not required: {n}=={v}" for n, v in sorted(have - want)]
             + [f"required but not installed: {n}=={v}" for n, v in sorted(want - have)]
             + errors)
    print(f"pip: .venv holds exactly the {len(want)} pinned requirements")


def check_uv(ws):
    import tomllib

    lock = tomllib.load(open(os.path.join(ws, "uv.lock"), "rb"))
    have, norm = venv_distributions(ws)
    listed = {(norm(p["name"]), p["version"]) for p in lock["package"] if "version" in p}
    errors = [f"installed but not in uv.lock: {n}=={v}" for n, v in sorted(have - listed)]
    errors += venv_missing_files(ws)
    r = subprocess.run(["uv", "sync", "--locked", "--check"], cwd=ws, capture_output=True, text=True)
    if r.returncode != 0:
        errors.append("uv sync --locked --check: the environment is not what uv.lock says:\n" + r.stderr)
    if errors:
        fail(errors)
    print(f"uv: .venv holds {len(have)} packages, all in uv.lock, and uv sync --check agrees")


def check_cargo(ws):
    import tomllib

    lock = tomllib.load(open(os.path.join(ws, "Cargo.lock"), "rb"))
    manifest = tomllib.load(open(os.path.join(ws, "Cargo.toml"), "rb"))
    root = manifest["package"]["name"]
    want = {(p["name"], p["version"]) for p in lock["package"] if p["name"] != root}
    env = dict(os.environ)
    home = os.path.join(ws, ".stateful-ci/cargo-home")
    if os.path.isdir(home):
        env["CARGO_HOME"] = home
    r = subprocess.run(
        ["cargo", "build", "--locked", "--offline", "-v"], cwd=ws, capture_output=True, text=True, env=env
    )
    if r.returncode != 0:
        fail(["cargo build --locked --offline failed:", r.stderr[-2000:]])
    built = set()
    for line in r.stderr.splitlines():
        m = re.match(r"\s*(Fresh|Compiling|Dirty)\s+(\S+)\s+v(\S+)", line)
        if m and m.group(2) != root:
            built.add((m.group(2), m.group(3)))
    # Cargo builds only what this platform needs (the lock also lists, e.g.,
    # windows-sys), so the check is one way: nothing built that is not locked.
    errors = [f"built but not locked: {n} {v}" for n, v in sorted(built - want)]
    if "Compiling" in r.stderr:
        errors.append("a second build recompiled something: the restored target/ was not fresh")
    if errors:
        fail(errors)
    print(f"cargo: the build is fresh with exactly the {len(built)} locked crates it needs")


def main():
    kind, ws = sys.argv[1], os.path.abspath(sys.argv[2])
    if kind in ("npm", "pnpm", "yarn-classic", "yarn-berry", "bun"):
        check_node(kind, ws)
    elif kind == "pip":
        check_pip(ws)
    elif kind == "uv":
        check_uv(ws)
    elif kind == "cargo":
        check_cargo(ws)
    else:
        fail([f"check_lock.py: unknown kind {kind!r}"])


if __name__ == "__main__":
    main()
