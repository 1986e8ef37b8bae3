"""The torch-free contract shared by training and the service: banks of atoms and their search
(and, at integration, the bundle schema, preprocessing and the NumPy potential)."""
