#!/usr/bin/env python3
"""Writes an OCI image (an image layout in a tar, as `ctr images import` and `docker load` take it) from
files on this machine, without Docker: one layer with the given files, the shared libraries they need (by
`ldd`), a passwd/group with the non-root user 65532, /tmp and the CA certificates.

The output is reproducible: entries sorted, times and owners fixed, gzip without a timestamp, so the same
inputs give the same digests, and `--print-digest` says whether an image is already built.

    oci.py --name localhost/mizzen/mizzen-serve:dev --out serve.tar \
        --entrypoint /usr/local/bin/mizzen-serve \
        --file target/release/mizzen-serve:/usr/local/bin/mizzen-serve \
        --file .../libonnxruntime.so.1.32.0:/usr/local/lib/libonnxruntime.so.1.32.0 \
        --env ORT_DYLIB_PATH=/usr/local/lib/libonnxruntime.so.1.32.0
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile

NONROOT = 65532
PASSWD = f"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
GROUP = f"root:x:0:\nnonroot:x:{NONROOT}:\n"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def shared_libraries(path):
    """The shared libraries `path` loads (ldd), with the dynamic loader: (path in the image, file here)."""
    try:
        out = subprocess.run(["ldd", path], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        sys.exit("oci.py: ldd is missing")
    libs = []
    for line in out.splitlines():
        line = line.strip()
        m = re.match(r"\S+ => (/\S+) \(0x", line) or re.match(r"(/\S+) \(0x", line)
        if m:
            libs.append((m.group(1), os.path.realpath(m.group(1))))
    return libs


class Layer:
    """A tar layer built in memory: directories made on the way, every entry owned by root, time 0."""

    def __init__(self):
        self.entries = {}  # path in the image -> (TarInfo, bytes or None)

    def _dirs(self, path, mode=0o755):
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.entries:
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, mode
                self.entries[d] = (info, None)

    def dir(self, path, mode=0o755):
        self._dirs(path.rstrip("/") + "/x")
        info = tarfile.TarInfo(path.strip("/"))
        info.type, info.mode = tarfile.DIRTYPE, mode
        self.entries[path.strip("/")] = (info, None)

    def data(self, path, data, mode=0o644):
        self._dirs(path)
        info = tarfile.TarInfo(path.strip("/"))
        info.size, info.mode = len(data), mode
        self.entries[path.strip("/")] = (info, data)

    def file(self, src, dest, mode=None):
        with open(src, "rb") as f:
            data = f.read()
        self.data(dest, data, mode if mode is not None else (os.stat(src).st_mode & 0o777))

    def symlink(self, path, target):
        self._dirs(path)
        info = tarfile.TarInfo(path.strip("/"))
        info.type, info.linkname = tarfile.SYMTYPE, target
        self.entries[path.strip("/")] = (info, None)

    def tar(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            for name in sorted(self.entries):
                info, data = self.entries[name]
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                t.addfile(info, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()


def blob(content):
    return "sha256:" + hashlib.sha256(content).hexdigest(), content


def build(args):
    layer = Layer()
    layer.data("etc/passwd", PASSWD.encode())
    layer.data("etc/group", GROUP.encode())
    layer.dir("tmp", 0o1777)
    layer.dir(f"home/nonroot", 0o755)
    if not args.no_ca and os.path.exists(CA_BUNDLE):
        layer.file(CA_BUNDLE, CA_BUNDLE, 0o644)
    needs_libs = []
    for spec in args.file:
        src, _, dest = spec.partition(":")
        if not dest:
            sys.exit(f"oci.py: --file wants SRC:DEST, got {spec!r}")
        layer.file(src, dest)
        needs_libs.append(src)
    for spec in args.symlink:
        path, _, target = spec.partition(":")
        layer.symlink(path, target)
    for d in args.dir:
        layer.dir(d)
    if not args.static:
        for src in needs_libs:
            for in_image, here in shared_libraries(src):
                if in_image.strip("/") not in layer.entries:
                    layer.file(here, in_image, 0o755)
    layer_tar = layer.tar()
    diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
    layer_gz = gzip.compress(layer_tar, compresslevel=6, mtime=0)
    layer_digest, _ = blob(layer_gz)

    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": args.user,
            "Entrypoint": args.entrypoint,
            "Cmd": args.cmd,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"] + args.env,
            "WorkingDir": args.workdir,
            "Labels": {"org.opencontainers.image.source": "https://github.com/mizzen-dev/mizzen"},
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "hack/images/oci.py"}],
    }
    config_digest, config_bytes = blob(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": len(layer_gz),
            }
        ],
    }
    manifest_digest, manifest_bytes = blob(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())
    if args.print_digest:
        print(manifest_digest)
        return
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "annotations": {
                    "io.containerd.image.name": args.name,
                    "org.opencontainers.image.ref.name": args.name.rsplit(":", 1)[-1],
                },
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    out = tarfile.TarInfo
    tmp = args.out + ".part"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as t:

        def add(name, data):
            info = out(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            t.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index, sort_keys=True).encode())
        for digest, content in [(layer_digest, layer_gz), (config_digest, config_bytes),
                                (manifest_digest, manifest_bytes)]:
            add("blobs/sha256/" + digest.split(":", 1)[1], content)
    os.replace(tmp, args.out)
    print(manifest_digest)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="image reference, e.g. localhost/mizzen/mizzen-serve:dev")
    p.add_argument("--out", required=True, help="the tar to write (an OCI image layout)")
    p.add_argument("--file", action="append", default=[], help="SRC:DEST, a file to put in the image")
    p.add_argument("--symlink", action="append", default=[], help="PATH:TARGET")
    p.add_argument("--dir", action="append", default=[], help="an empty directory to make")
    p.add_argument("--entrypoint", nargs="+", default=None)
    p.add_argument("--cmd", nargs="*", default=None)
    p.add_argument("--env", action="append", default=[], help="K=V")
    p.add_argument("--user", default=f"{NONROOT}:{NONROOT}")
    p.add_argument("--workdir", default="/")
    p.add_argument("--static", action="store_true", help="the files need no shared libraries")
    p.add_argument("--no-ca", action="store_true", help="leave out the CA certificates")
    p.add_argument("--print-digest", action="store_true", help="print the manifest digest, write nothing")
    build(p.parse_args())


if __name__ == "__main__":
    main()
