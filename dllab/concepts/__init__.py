"""Framework mechanics, shown by measurement: autograd, tapes, modules, optimizers, sessions, ..."""
