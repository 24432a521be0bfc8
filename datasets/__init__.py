"""Sample data for kvis: committed real foamToVTK output and generators.

``datasets.synthetic`` writes synthetic foamToVTK legacy series (numpy only);
see datasets/README.md. This file makes ``datasets`` a regular package so that
``from datasets.synthetic import write_series`` (run from the repository root)
is not shadowed by an installed package of the same name.
"""
