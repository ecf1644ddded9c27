"""Installs the MobileNetV2 multi-task library (nets, heads, pipelines, datasets) and the `mnv2` CLI.

The TensorFlow pin depends on the interpreter: TF 1.15.5 only exists for Python <= 3.7, and TF 2.15.1 is
the last release that ships `tf.estimator`. Environment markers choose the right stack per interpreter.

On Python >= 3.8 the TensorFlow 2.15.1 build is an extra, because `tensorflow-cpu` and `tensorflow` are two
distributions that write the same `tensorflow` package (installing both leaves a broken mix):

    pip install -e .[cpu]   # tensorflow-cpu==2.15.1 (what the Makefile installs)
    pip install -e .[gpu]   # tensorflow[and-cuda]==2.15.1 alone: GPU build + CUDA/cuDNN wheels

A plain `pip install -e .` on Python >= 3.8 installs no TensorFlow (bring your own 2.15 build).
Python 3.7 always gets tensorflow==1.15.5 (CPU and GPU in one wheel) and ignores both extras.
"""
from setuptools import find_packages
from setuptools import setup

PY37 = 'python_version < "3.8"'
PY3X = 'python_version >= "3.8"'

INSTALL_REQUIRES = [
    # TensorFlow 1.15.5 stack (Python 3.7). The extra pins are what TF 1.15 needs to import at all:
    # newer numpy / protobuf / h5py releases break its generated code and its Keras loader.
    'tensorflow==1.15.5; ' + PY37,
    'numpy>=1.16,<1.19; ' + PY37,
    'protobuf>=3.6.1,<3.21; ' + PY37,
    'h5py<3; ' + PY37,
    'Pillow>=8,<10; ' + PY37,
    # TensorFlow 2.15.1 stack (Python 3.9-3.11): TensorFlow itself comes from the `cpu` or `gpu` extra.
    'numpy>=1.23.5,<2; ' + PY3X,
    'Pillow>=9; ' + PY3X,
    # Both stacks.
    'tf-slim==1.1.0',
    'pycocotools>=2.0.2',
    'pyyaml>=5.1',
]

setup(
    name='mnv2',
    version='0.1.0',
    description='MobileNetV2 backbone (TF-Slim compatible) with classification, SSDLite and DeepLabv3 '
                'pipelines on tf.estimator',
    packages=find_packages(include=('nets', 'nets.*', 'heads', 'heads.*', 'pipelines', 'pipelines.*', 'datasets', 'datasets.*')),
    python_requires='>=3.7,<3.12',
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # Exactly one of them on the TF 2.15 stack (see the module docstring); no-ops on Python 3.7.
        'cpu': ['tensorflow-cpu==2.15.1; ' + PY3X],
        'gpu': ['tensorflow[and-cuda]==2.15.1; ' + PY3X],
        # ONNX export and ONNX Runtime prediction (TF 2.15 stack only: every onnxruntime wheel for Python 3.7
        # wants numpy >= 1.21.6, TF 1.15 numpy < 1.19). A set consistent with TF 2.15's numpy < 2 and
        # protobuf < 5: unpinned, pip would take numpy 2 and a protobuf that TF 2.15 cannot import. tf2onnx
        # pins protobuf ~=3.20, whose Python 3.11 build is pure Python (slower graph building); `make test`
        # installs tf2onnx without it (README "Install").
        'onnx': ['tf2onnx==1.16.1; ' + PY3X, 'onnx==1.16.2; ' + PY3X, 'onnxruntime==1.19.2; ' + PY3X],
        # Prediction from exported model.tflite / model.onnx files WITHOUT TensorFlow (`pip install ".[lite]"`, no
        # `cpu`): ai-edge-litert, TFLite's standalone runtime (the SSD post-processing op built in; x86-64
        # and aarch64 wheels), and ONNX Runtime. Consistent with TF 2.15's numpy < 2, so
        # ".[cpu,lite]" also installs. Not on Python 3.7 (no runtime wheel beside TF 1.15's numpy < 1.19).
        'lite': ['ai-edge-litert==1.4.0; python_version >= "3.9"', 'onnxruntime==1.19.2; python_version >= "3.9"'],
        # The test tools (`make test` installs them); a plain install pulls none.
        'test': ['pytest>=6,<8; ' + PY37, 'pytest-xdist>=3,<3.3; ' + PY37,  # xdist: `make test` JOBS
                 'pytest>=7; ' + PY3X, 'pytest-xdist>=3; ' + PY3X],
    },
    entry_points={'console_scripts': ['mnv2 = pipelines.cli.main:run']},
)
