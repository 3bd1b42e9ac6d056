"""The pruning methods, one file each.

A file registers its method with `tfprune.registry.register` (its kind, data, rounds, options,
ablations and how the report draws it) and, for a method scored at initialization, defines its
`Scorer` or names the module that does. The registry imports every file here on first use, so
adding a method is adding a file. The files import neither TensorFlow nor Keras at import time.
"""
