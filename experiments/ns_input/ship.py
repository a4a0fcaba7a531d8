"""Write a theta file with some architecture options changed and provenance fields added.

    python experiments/ns_input/ship.py IN.npz OUT.npz [conv_as_matrix=true] [selection="..."] [validation=PATH]

``key=value`` pairs naming an option of the file's arch change ``arch_config`` (values parsed
as JSON, else kept as strings); any other key is added to the header (provenance: how the
theta was selected and where its evaluations are). The theta itself is copied unchanged.
"""

from __future__ import annotations

import json
import sys

from evolopt.export import load_theta_file, save_theta_file


def main(argv: list[str]) -> None:
    src, dst, *pairs = argv
    theta, header = load_theta_file(src)
    arch, arch_config = header.pop("arch"), dict(header.pop("arch_config"))
    for key in ("format", "version"):
        header.pop(key)
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        (arch_config if key in arch_config else header)[key] = value
    header.setdefault("derived_from", src)
    save_theta_file(dst, theta, arch, arch_config, **header)
    print(f"wrote {dst}: arch {arch}, arch_config {arch_config}")


if __name__ == "__main__":
    main(sys.argv[1:])
