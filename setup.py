"""mtl_jax: multi-task learning with hard parameter sharing in JAX/Flax."""

import setuptools

setuptools.setup(
    name="mtl_jax",
    version="0.1.0",
    description="Multi-task learning with hard parameter sharing in JAX/Flax.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["mtl_jax", "mtl_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "grain>=0.2.10",
        "tensorflow-datasets>=4.9",
        # TFDS 4.9.10 imports it to download but declares it only for Python < 3.9
        # (tensorflow/datasets#11212).
        "importlib_resources",
        "pandas>=2.0",
        "ml-collections>=1.0",
        "clu>=0.0.12",
        # clu's metric writers import TensorFlow and write TensorBoard files.
        "tensorflow-cpu>=2.16",
        "tensorboard>=2.16",
        "pillow>=10.0",
        "matplotlib>=3.8",
        "scikit-learn>=1.3",
    ],
    extras_require={
        "test": ["pytest>=8.0", "pytest-xdist>=3.5"],
        # Reference implementations for benchmarks only; never imported by the library.
        # experiments/bench_arch.py also needs LibMTL, installed apart and without its
        # dependencies: `pip install LibMTL==1.1.5 --no-deps`. With them, pip resolves its
        # torchvision requirement to 0.28.0, which fails to import with torch 2.13.0+cpu
        # ("operator torchvision::nms does not exist"), and the script needs no torchvision.
        "bench": ["torch==2.13.0"],
    },
)
