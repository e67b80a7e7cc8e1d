"""The labeling loop: a run's picks exported to labeling tools, and their labels imported back.

- :mod:`~alray.labeling.selection`: a run's picks with their scores, prediction and payload.
- :mod:`~alray.labeling.label_studio`: Label Studio tasks, labeling config, export parsing, the API.
- :mod:`~alray.labeling.coco_cvat`: COCO 1.0 JSON and CVAT for images 1.1 XML.
- :mod:`~alray.labeling.images`: image files, data URIs and sizes for exports.
- :mod:`~alray.labeling.export` / :mod:`~alray.labeling.importer`: ``alray export`` and ``alray import-labels``.
"""
