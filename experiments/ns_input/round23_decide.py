"""Round 23's rule applied to the as-shipped means on validation2 (128-batch test loss).

    python experiments/ns_input/round23_decide.py [NAME ...]   # default: round 23's seven means

Round 24 applies the same rule: ``round23_decide.py avg4_0375``.

Eligible: against the start as shipped, mean-train wins >= 4/6 and test worse <= 2/6; the pick has the
lowest geo-mean mean-train ratio; it ships if, against celo2-cpu, that geo-mean is < 1 and it is worse on
test loss on no more tasks than it is better.
"""

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from vs_start import read  # noqa: E402

EVAL = Path(__file__).parent / "eval"
NAMES = ["avg4_0125", "avg4_0125_b", "avg4_0125_c", "avg4_025_b", "avg4_025", "avg8_0125", "avg8_025"]


def geo(xs: list[float]) -> float:
    return math.exp(sum(map(math.log, xs)) / len(xs))


def ratios(cand: dict, ref: dict, key: str) -> list[float]:
    return [cand[t][key] / ref[t][key] for t in cand]


def main() -> None:
    start, shipped = read(EVAL / "validation2_f3_start_conv"), read(EVAL / "validation2_f3_celo2-cpu")
    for name in sys.argv[1:] or NAMES:
        cand = read(EVAL / f"validation2_f3_ship_{name}")
        mean, test = ratios(cand, start, "mean"), ratios(cand, start, "valid")
        wins, worse = sum(r < 1 for r in mean), sum(r > 1 for r in test)
        vs_mean, vs_test = ratios(cand, shipped, "mean"), ratios(cand, shipped, "valid")
        print(
            f"{name}: vs start wins {wins}/6 geo {geo(mean):.3f}, test worse {worse}/6 -> "
            f"{'eligible' if wins >= 4 and worse <= 2 else 'not eligible'}; vs celo2-cpu geo {geo(vs_mean):.3f}, "
            f"test worse {sum(r > 1 for r in vs_test)} better {sum(r < 1 for r in vs_test)}"
        )


if __name__ == "__main__":
    main()
