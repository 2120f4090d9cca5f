"""posefeed inside other projects' training code.

- ``posefeed.integrations.dlc_heatmap``: DeepLabCut 3.x heatmap + locref targets in torch (the
  logic of the drop-in generators; imports no DeepLabCut).
- ``posefeed.integrations.dlc_config``: switching a shuffle's ``pytorch_config.yaml`` to
  posefeed's generators and back (YAML only; imports no DeepLabCut).
- ``posefeed.integrations.deeplabcut``: the DeepLabCut layer (``pip install
  'posefeed[deeplabcut]'``): importing it registers posefeed's generators in DeepLabCut's
  ``TARGET_GENERATORS``.
"""
