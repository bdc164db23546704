"""Data: dataset readers (VOC, COCO, synthetic), image decoding and resizing, and views."""
