"""Benchmarks for inorder: ``python -m benchmarks``.

Each scenario measures one performance target of the design (P1-P7, plus
logging overhead and thread producers) for the runtime and, in the same
process and under the same workload, for the peers: the per-user designs
that chat backends write by hand (see ``benchmarks._peers``).

Figures are reported as ratios computed within one run, because an absolute
figure alone means little on a shared machine. ``BENCHMARKS.md`` describes
every scenario and holds the published results.
"""

__all__: list[str] = []
