"""The reference recommender stack: synthetic catalog, two-tower model, faiss index,
a versioned and integrity-checked model store, replica servers and a gateway.

Heavy modules (torch, faiss) are imported only by the modules that need them, so importing
this package is cheap.
"""
