"""Metrics: COCO box AP, the segmentation confusion matrix and mIoU, and exported models scored on a split."""
