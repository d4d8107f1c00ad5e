"""The notebook layer: the %%serve magic and live widgets (imports IPython/ipywidgets lazily)."""
