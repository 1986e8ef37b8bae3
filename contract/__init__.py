"""The torch-free contract shared by training, the service and `atomize index`: the bundle schema
and its validation (`bundle`), input checks and preparation (`inputs`, `preprocess`), the one
model runner (`runner`), the NumPy pair potential (`potential`), banks of atoms and their search
(`bank`, `index`) and the explorer's 2D map (`projection`). No application library (typer, rich,
Ray, FastAPI) and no torch is imported here; tests/contract/test_imports.py checks it.
"""
