"""The licenses a catalog allows for training by default (a module without imports, so that
``microturn catalog build --help`` lists them without loading DuckDB or Beam)."""

# Licenses whose terms allow using the data to train models, commercial use included, by their
# SPDX ids: public-domain dedications (CC0-1.0, PDDL-1.0, Unlicense), attribution licenses
# (CC-BY, ODC-By, CDLA-Permissive, MIT, BSD, Apache-2.0) and share-alike CC-BY-SA. Attribution
# and share-alike duties still apply to what is published; NonCommercial (NC) and NoDerivatives
# (ND) variants are left out on purpose. Extend per project with `--allow-license`.
# The catalog builder (microturn.pipelines.catalog.build) imports this tuple.
DEFAULT_ALLOWED_LICENSES: tuple[str, ...] = (
    "CC0-1.0",
    "PDDL-1.0",
    "Unlicense",
    "CC-BY-3.0",
    "CC-BY-4.0",
    "CC-BY-SA-3.0",
    "CC-BY-SA-4.0",
    "ODC-By-1.0",
    "CDLA-Permissive-1.0",
    "CDLA-Permissive-2.0",
    "Apache-2.0",
    "MIT",
    "BSD-2-Clause",
    "BSD-3-Clause",
)
