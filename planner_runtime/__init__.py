"""planner-runtime: the onboard, torch-free half of the diffusion planning service.

Everything in this package must run on a Jetson image without torch: numpy, onnxruntime
(or tensorrt), pyzmq and msgpack only. The offline side (``export``), the robot side
(``robot``) and the simulators (``sim``) import this package; it never imports them.
"""

__version__ = "0.1.0"
