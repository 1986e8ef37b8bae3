"""The torch-free contract shared by training and the service: the bundle schema and its
validation (`bundle`), input preparation (`preprocess`), the NumPy pair potential
(`potential`), banks of atoms and their search (`bank`, `index`), the explorer's 2D map
(`projection`) and corpus atomizing (`atomizer`, `indexer`, `corpus`)."""
