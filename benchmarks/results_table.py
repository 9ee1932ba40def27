"""Markdown tables of the ``reproduce_*.json`` results, with the published numbers beside ours.

Example::

    benchmarks/.venv/bin/python benchmarks/results_table.py --tag default
"""

from __future__ import annotations

import argparse
import json
import math

from common import RESULTS

#: Published numbers (test NLL in nats, mean +- std over 5 seeds where printed) and where
#: they were read. Riemannian Score-Based (RSGM): De Bortoli et al. 2022, Table 4 (primary
#: text). Riemannian FM (RFM): Chen & Lipman 2024, read from secondary reprints (a reprint of
#: its torsion table without standard deviations, and notes quoting its Earth table).
PUBLISHED = {
    "volcano": "RFM -7.93 +- 1.67; RSGM -4.92 +- 0.25; Moser flow -4.21 +- 0.17",
    "flood": "RSGM 0.45 +- 0.17; Moser flow 0.57 +- 0.10; Riemannian CNF 1.11 +- 0.19",
    "rama-General": "RFM 1.01; RDM 1.04 (Lovell top500 set)",
    "rama-Glycine": "RFM 1.90; RDM 1.97 (Lovell top500 set)",
    "rama-Proline": "RFM 0.15 +- 0.027; RDM 0.12 +- 0.011 (Lovell top500 set)",
    "rama-Pre-Pro": "RFM 1.18; RDM 1.24 (Lovell top500 set)",
    "ile4": "none found",
    "aemet": "tables not retrievable here",
    "genes": "tables not retrievable here",
    "moons": "W2 values of the TorchCFM table not retrievable here",
}

#: NLL of the uniform distribution (the untrained source) per row.
UNIFORM_NLL = {
    "volcano": math.log(4 * math.pi),
    "flood": math.log(4 * math.pi),
    "ile4": 4 * math.log(2 * math.pi),
    **{
        f"rama-{c}": 2 * math.log(2 * math.pi) for c in ("General", "Glycine", "Proline", "Pre-Pro")
    },
}


def fmt(s: dict | None, digits: int = 2) -> str:
    if not s:
        return "-"
    return f"{s['mean']:.{digits}f} +- {s['std']:.{digits}f} (n={s['n']})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tag", default="default")
    args = p.parse_args(argv)
    files = sorted(RESULTS.glob(f"reproduce_*_{args.tag}.json"))
    nll_rows, fn_rows, eu_rows = [], [], []
    for f in files:
        r = json.loads(f.read_text())
        row, s = r["row"], r["summary"]
        steps = sorted({x["steps_done"] for x in r["per_seed"]})
        fit_s = [x["fit_seconds"] for x in r["per_seed"]]
        compute = f"{min(steps)}-{max(steps)} steps, {min(fit_s):.0f}-{max(fit_s):.0f} s/seed"
        if "test_nll" in s:
            nll_rows.append(
                f"| {row} | {r['n_points']} | {fmt(s['test_nll'])} | "
                f"{UNIFORM_NLL.get(row, float('nan')):.2f} | {PUBLISHED[row]} | {compute} |"
            )
        elif "w2" in s:
            eu_rows.append(
                f"| {row} | {fmt(s['w2'], 3)} | {fmt(s.get('floor_w2'), 3)} | "
                f"{fmt(s['mmd'], 4)} | {compute} |"
            )
        else:
            cells = " | ".join(
                f"{fmt(s.get(k), 4)} / {fmt(s.get('floor_' + k), 4)}"
                for k in ("mean_mse", "variance_mse", "autocovariance_mse", "density_mse")
            )
            fn_rows.append(f"| {row} | {r['n_points']} | {cells} | {compute} |")
    if nll_rows:
        print("| data | points | test NLL (ours) | uniform | published | compute |")
        print("|---|---|---|---|---|---|")
        print("\n".join(nll_rows) + "\n")
    if fn_rows:
        print(
            "| data | curves | mean MSE (ours / floor) | variance MSE (ours / floor) "
            "| autocovariance MSE (ours / floor) | density MSE (ours / floor) | compute |"
        )
        print("|---|---|---|---|---|---|---|")
        print("\n".join(fn_rows) + "\n")
    if eu_rows:
        print("| data | W2 | W2 floor (two data samples) | MMD^2 | compute |")
        print("|---|---|---|---|---|")
        print("\n".join(eu_rows) + "\n")
    for f in files:
        print(f"- `{json.loads(f.read_text())['command']}`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
