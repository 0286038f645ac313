"""sevila-kit: a readable re-implementation of SeViLA (Yu et al., NeurIPS 2023) on transformers' BLIP-2 parts.

`sevila_lib.ask(video, question, options)` runs the forward chain on a video file (`sevila_lib/ask.py`); it is
imported on first use, so `import sevila_lib` stays free of torch and transformers.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "ask":
        import importlib

        # Importing the submodule binds `sevila_lib.ask` to the module; rebind it to the function.
        function = importlib.import_module(".ask", __name__).ask
        globals()["ask"] = function
        return function
    raise AttributeError(f"module 'sevila_lib' has no attribute {name!r}")
