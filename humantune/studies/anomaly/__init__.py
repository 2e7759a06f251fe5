"""The anomaly-correction workflow of ``shared/papers.md`` §4 as functions (``humantune anomaly scan | collect |
compare`` call them; so does ``benchmarks/anomaly_correction.py``):

1. :func:`~humantune.studies.anomaly.scan.scan` — generate N images per prompt, score each image's anatomy, rank
   the prompts by anomaly rate and write ``scan.json`` plus an HTML report of the worst cases (detected skeleton
   drawn over each).
2. :func:`humantune.data.mannequin.prompted.collect` — correct images for a failing prompt: from a folder the user
   supplies, or rendered by the mannequin world for that prompt
   (:func:`~humantune.data.mannequin.prompted.render_prompt_scenes`), with a ``metadata.jsonl`` of captions.
3. Fine-tune with ``humantune train dreambooth-lora`` (:mod:`humantune.recipes.dreambooth_lora`).
4. :func:`~humantune.studies.anomaly.compare.compare` — the base model and the tuned one (base + LoRA) on the same
   seeds: anomaly rate before/after on target and control prompts, attribute accuracy, distances to the correct
   images (SSIM/PSNR as the paper reports, ``world_fd``, FID when Inception weights are given) and a side-by-side
   pair set for a human preference study with its key in a separate file (:mod:`humantune.studies.anomaly.pairs`).

Conventions (written into every ``scan.json`` / ``compare.json``):

- Seeds: prompt p (0-based, in the order given) gets images j = 0 … n−1 with seed ``seed + p·n + j`` — the
  convention of ``humantune generate``; compare uses the same seeds for the base and the tuned model.
- Anatomy: MediaPipe Pose on each image, the highest-scoring detection scored by
  :func:`humantune.eval.anatomy.score_detection` (keypoints used at confidence ≥ 0.5); an image is anomalous when a
  check fires (severity > 1) **or nobody is detected**. Rates carry Wilson 95 % intervals; the change of a rate
  (tuned − base) carries Newcombe's hybrid-score interval for two independent proportions
  (:func:`humantune.eval.statistics.proportion_difference_interval`; conservative here, since the same seeds pair
  the images).
- Body states: MediaPipe's "nobody detected" is a different failure from a broken body, and MediaPipe fits a
  plausible skeleton onto broken bodies, so every image also gets one of three states — ``no_person`` (nobody
  detected), ``broken`` (a person detected and the anatomy judge, :mod:`humantune.eval.anatomy_judge`, gives
  P(broken) above its threshold) or ``whole`` — reported as three rates (``body_rates``) with the same intervals.
- Attribute accuracy: :func:`humantune.eval.attributes.attribute_accuracy` (shirt and trouser colour, background,
  posture) on the same detection, pooled over attributes; its interval is a bootstrap over images and the
  difference's a paired bootstrap over seeds
  (:func:`humantune.eval.statistics.paired_ratio_difference_interval`).
- Distances to the correct images (target prompts only; ``shared/papers.md`` §4 reports FID/SSIM/PSNR of generated
  vs correct images): SSIM/PSNR are averaged over **every pair (generated image of prompt p, correct image of
  prompt p)** — a correct image belongs to p when its caption is p; if no caption equals p, all correct images pair
  with p's images — with the correct image resized to the generated size (PIL bicubic), uint8, R = 255; first the
  mean over a generated image's pairs, then over images. ``world_fd`` and FID compare the set of generated target
  images with the set of correct images (sizes as they are).
"""
