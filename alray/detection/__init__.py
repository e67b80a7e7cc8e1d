"""Object detection: the detections contract, scores of detections, importers, the detector's
scoring path, object-class balance, object-level (crop) selection and the detection demo.

- :mod:`~alray.detection.boxes`: the ``detections`` column (Arrow type), :class:`Detections`,
  row validation against the image, box arithmetic (IoU, flips, scaling);
- :mod:`~alray.detection.scores`: per-image and per-object scores (arrays in, arrays out);
- :mod:`~alray.detection.balance`: image quotas that bring the selection's object counts to a target;
- :mod:`~alray.detection.precomputed`: features rows of a pool that holds its own detections;
- :mod:`~alray.detection.importers`: COCO results JSON and YOLO txt predictions to the column;
- :mod:`~alray.detection.scorer`: one batch of images through a detector (or the pool's
  detections) to features rows and object rows;
- :mod:`~alray.detection.objects`: the object rows' table and the image ranking derived from
  the object ranking;
- :mod:`~alray.detection.centernet`, :mod:`~alray.detection.training`, :mod:`~alray.detection.metrics`,
  :mod:`~alray.detection.synthetic`: a tiny detector in plain torch, its training, mAP, the demo pool.
"""
