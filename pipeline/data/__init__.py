"""Data: dataset readers (VOC, COCO, synthetic), image decoding and resizing, and the
DataLoader feed that reads ahead of the model."""
