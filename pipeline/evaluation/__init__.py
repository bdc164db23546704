"""Evaluation: VOC and COCO metrics, proposal recall, and pictures of detections."""
