"""Names of the dictionary keys that the detection box math produces and consumes.

One place for the strings, so the target assigner, the loss, the estimator and the exporter agree.
Not here: input-pipeline feature keys (those belong to `datasets`) or any logic.
"""

# Keys of the dict returned by `heads.core.target_assigner.assign` (per image; batched by tf.data).
CLS_TARGETS = 'cls_targets'
CLS_WEIGHTS = 'cls_weights'
REG_TARGETS = 'reg_targets'
REG_WEIGHTS = 'reg_weights'
MATCHES = 'matches'
NUM_POSITIVES = 'num_positives'
TARGET_KEYS = (CLS_TARGETS, CLS_WEIGHTS, REG_TARGETS, REG_WEIGHTS, MATCHES, NUM_POSITIVES)

# Keys of the dict returned by `heads.core.post_processing.batch_multiclass_nms` (the OD API's names).
DETECTION_BOXES = 'detection_boxes'
DETECTION_SCORES = 'detection_scores'
DETECTION_CLASSES = 'detection_classes'
NUM_DETECTIONS = 'num_detections'
DETECTION_ANCHOR_INDICES = 'detection_anchor_indices'
DETECTION_KEYS = (DETECTION_BOXES, DETECTION_SCORES, DETECTION_CLASSES, NUM_DETECTIONS)

# Values of the int32 match vector (see `heads.core.matcher`).
UNMATCHED = -1
IGNORED = -2
