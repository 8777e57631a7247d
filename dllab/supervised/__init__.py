"""Supervised learning on bundled real data, torch and Keras side by side with the same names:
an MLP, a CNN, RNN/LSTM/GRU, transfer learning, fit variants, callbacks and serialization."""
