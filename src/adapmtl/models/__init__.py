"""Multitask models of the paper (Section 4.1.3): a shared DeepLab-ResNet34 or MobileNetV2
backbone with one DeepLab-v2 ASPP head per task, at full size or CPU-sized, built by name."""

from adapmtl.models.aspp import ASPPHead
from adapmtl.models.mobilenetv2 import MobileNetV2
from adapmtl.models.multitask import MultiTaskModel
from adapmtl.models.presets import MODELS, build_model, deeplab_resnet34, mobilenetv2
from adapmtl.models.resnet import DeepLabResNet

__all__ = [
    "MODELS",
    "ASPPHead",
    "DeepLabResNet",
    "MobileNetV2",
    "MultiTaskModel",
    "build_model",
    "deeplab_resnet34",
    "mobilenetv2",
]
