"""Universal interatomic potentials (SevenNet-0, CHGNet, or a user's local weights file) as voltage models.

calculators.py  a potential by name -> an ASE calculator + the identity that keys every cache
cache.py        energies, embeddings and relaxed structures on disk (never computed twice)
references.py   the working-ion metal, relaxed once per potential
voltage.py      energies -> average voltage through pymatgen's battery tools
compute.py      what a study or a served model asks for: energies of many structures, mode (b) hosts
"""
