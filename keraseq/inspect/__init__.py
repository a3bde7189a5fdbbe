"""See inside keraseq models: gradient flow through time, LSTM gates, attention
maps, embeddings and training curves.

Each tool is a Python function returning the numbers behind its picture, and a
`keraseq inspect ...` command that writes a PNG (matplotlib, Agg backend) and the
same numbers as JSON. Importing this package imports neither Keras nor
matplotlib; each module imports what it needs when called.
"""
