"""Stage `embed`: a trained model encodes a split into an EMB folder (`layout`): global embeddings,
memory-mapped local features and FAISS indexes (`index`); `store` reads it back."""
