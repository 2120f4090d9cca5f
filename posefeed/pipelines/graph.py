"""The DALI graph: decode -> affine crop -> HSV -> blur -> median blur -> [motion blur] ->
dropout -> [Gaussian noise] -> normalise -> targets (the bracketed stages only in graphs whose
schedule uses them, ``GraphSpec.motion_noise``). All random parameters come from the sample
source (per sample), so the graph holds no state; the one exception is the per-pixel Gaussian
noise of the DALI-ops path (``fn.noise.gaussian``, DALI's generator: its strength and on/off
come from the source, its pixel values are not reproducible across a resume; the OpenCV stage
seeds its noise from the source and is).

GPU: "mixed" decode, then DALI ops (``warp_affine``, ``hsv``, ``filter``,
``experimental.median_blur``, ``erase``) and the codecs on CuPy. CPU (default
``cpu_backend="opencv"``): ROI decode of the region the crop reads, then one OpenCV batch
stage for crop + photometric (`posefeed.pipelines.opencv_ops`), then normalise and the codecs
on NumPy. ``cpu_backend="dali"`` runs the GPU graph's ops on the CPU instead.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from operator import itemgetter
from typing import Sequence

import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali import pipeline_def
from nvidia.dali.pipeline import do_not_convert

from posefeed.pipelines.feed_process import HOLD
from posefeed.pipelines.fields import Packing
from posefeed.pipelines.opencv_ops import OpenCVCrop
from posefeed.pipelines.source import SourceFn
from posefeed.targets.base import Codec

#: ImageNet mean / std in 0..255 units (RGB)
from posefeed.constants import IMAGENET_MEAN as MEAN, IMAGENET_STD as STD


#: DALI's prefetch queue depth (iterations in flight ahead of the consumer)
PREFETCH = 2

#: feed the DALI-ops graph's parameters packed in two arrays (`GraphSpec.packed`): ~18 us of
#: DALI's Python per fed input on the thread that runs the pipeline (docs/benchmarks.md)
PACK_PARAMS = True

#: on the CPU, run the codecs after the graph (`DenseTargets`) by default (measured in
#: docs/benchmarks.md, "dense targets on the CPU")
CPU_DENSE_TARGETS = False


@dataclass(frozen=True)
class GraphSpec:
    """Static choices that shape the graph (changing one means building a new pipeline).

    ``frames``: None (encoded bytes, decoded in the graph), "host" (decoded frames from a CPU
    cache) or "device" (decoded frames already on the GPU).
    ``cpu_backend``: on CPU, "opencv" (crop + photometric in one OpenCV batch stage, fast) or
    "dali" (DALI ops, as on the GPU).
    ``roi``: decode only the region the crop reads (JPEG ROI decode); the source must then
    emit matrices relative to that region (``SourceSpec.roi``).
    ``opencv_decode``: with the opencv backend, decode with ``cv2.imdecode`` inside the OpenCV
    stage instead of DALI's decoder (PNG datasets).
    """

    device: str                       # "cpu" | "gpu"
    input_size: tuple[int, int]       # (w, h)
    image_dtype: str = "float32"      # "float32" | "uint8"
    frames: str | None = None
    cpu_backend: str = "opencv"
    roi: bool = False
    opencv_decode: bool = False       # CPU opencv backend: decode (PNG) inside the OpenCV stage
    #: the codecs run after the graph on the dense keypoint batch (`DenseTargets`), not
    #: inside it: always on the GPU (DALI's python_function is per sample there)
    dense_targets: bool = False
    #: the motion-blur and Gaussian-noise stages (DeepLabCut's recipe) are in the graph: only
    #: when the schedule uses them, so other recipes compute and feed nothing for them
    motion_noise: bool = False
    #: fed fields that pass through the graph to the batch after `PASS_THROUGH` (of
    #: `EXTRA_OUTPUTS`: ``area`` when the table has areas, ``individual_ids`` in frame mode;
    #: computed with the parameters, so the loader runs no torch ops for them)
    extra_outputs: tuple[str, ...] = ()
    #: the parameter fields go to DALI packed in two arrays (`fields.Packing`) and are sliced
    #: back in the graph: the DALI-ops graph (GPU, and ``cpu_backend="dali"``), `PACK_PARAMS`
    packed: bool = False

    @classmethod
    def choose(cls, device: str, input_size: tuple[int, int], image_dtype: str = "float32",
               cache: str | None = None, cpu_backend: str = "opencv",
               roi_decode: bool | None = None, opencv_png: bool = True,
               paths: Sequence[str] = (), dense_targets: bool | None = None,
               motion_noise: bool = False, extra_outputs: Sequence[str] = ()) -> "GraphSpec":
        """The one place that decides the graph's shape from the loader's options: the OpenCV
        stage or DALI ops (``cpu_backend``, CPU only), decoding PNG inside the OpenCV stage
        (``opencv_png`` with a cache-less, PNG-only dataset: ``paths``), and ROI decode
        (``roi_decode``, default on for CPU; never with a cache or the OpenCV decode), and
        where the codecs run (``dense_targets``: after the graph; default and forced on the
        GPU, `CPU_DENSE_TARGETS` on the CPU), and whether the motion-blur / noise stages
        exist (``motion_noise``: the schedule uses them); ``extra_outputs``: see the field."""
        unknown = [f for f in extra_outputs if f not in EXTRA_OUTPUTS]
        if unknown:
            raise ValueError(f"extra_outputs {unknown} are not among {list(EXTRA_OUTPUTS)}")
        opencv = device == "cpu" and cpu_backend == "opencv"
        cv_decode = (opencv and cache is None and bool(opencv_png) and len(paths) > 0
                     and all(str(p).lower().endswith(".png") for p in paths))
        roi = (device == "cpu") if roi_decode is None else bool(roi_decode)
        return cls(device=device, input_size=(int(input_size[0]), int(input_size[1])),
                   image_dtype=image_dtype, frames=cache, cpu_backend=cpu_backend,
                   roi=roi and cache is None and not cv_decode, opencv_decode=cv_decode,
                   dense_targets=device == "gpu" or (CPU_DENSE_TARGETS if dense_targets is None
                                                     else bool(dense_targets)),
                   motion_noise=bool(motion_noise),
                   extra_outputs=tuple(f for f in EXTRA_OUTPUTS if f in extra_outputs),
                   packed=PACK_PARAMS and not opencv)

    @property
    def opencv(self) -> bool:
        return self.device == "cpu" and self.cpu_backend == "opencv"

    @property
    def frame_channels(self) -> int:
        """Channels of cached frames: RGBA for the CPU OpenCV stage (its 4-channel warp is 2x
        faster, same RGB values), RGB otherwise."""
        return 4 if self.opencv else 3

    @property
    def crop_ahead(self) -> bool:
        """The OpenCV stage's inputs are all in the source (cached host frames, or PNG bytes
        it decodes), so the source starts each batch's OpenCV work when DALI asks for it."""
        return self.opencv and (self.frames == "host" or (self.frames is None and self.opencv_decode))


#: the feed fields the OpenCV stage takes after the frames, in its argument order
CROP_INPUTS = ("crop_affine", "hsv_lut", "hsv_on", "blur_size", "median_size", "drop_box")
#: the OpenCV stage's motion-blur and noise inputs (after `CROP_INPUTS`, with ``motion_noise``)
CROP_MOTION_NOISE = ("motion_filter", "noise_cv")
#: the feed fields the DALI-ops crop + photometric stage reads
DALI_OPS_INPUTS = ("warp", "hue", "saturation", "value", "blur", "blur_kernel", "median",
                   "drop_anchor", "drop_shape")
#: the DALI-ops stage's motion-blur and noise inputs (with ``motion_noise``)
DALI_MOTION_NOISE = ("motion", "motion_kernel", "noise", "noise_std")
#: fields every graph passes through as outputs
PASS_THROUGH = ("keypoints", "index", "affine")
#: fields a graph may pass through after `PASS_THROUGH` (`GraphSpec.extra_outputs`), in order
EXTRA_OUTPUTS = ("area", "individual_ids")


def crop_inputs(spec: GraphSpec) -> tuple[str, ...]:
    """The OpenCV stage's inputs after the frames, in its argument order."""
    return CROP_INPUTS + (CROP_MOTION_NOISE if spec.motion_noise else ())


def graph_params(spec: GraphSpec) -> tuple[str, ...]:
    """The feed fields the graph's parameter ``external_source`` outputs (with crop ahead the
    OpenCV stage's inputs go to the pool in the source instead)."""
    fields = graph_fields(spec)[1:]
    if spec.crop_ahead:
        fields = tuple(f for f in fields if f not in crop_inputs(spec))
    return fields


def graph_fields(spec: GraphSpec) -> tuple[str, ...]:
    """The feed fields the graph of ``spec`` reads, "images" first (the source computes only
    these)."""
    fields = ["images"]
    if spec.frames is None and spec.roi and not (spec.opencv and spec.opencv_decode):
        fields += ["roi_anchor", "roi_shape"]
    if spec.opencv:
        fields += crop_inputs(spec)
    else:
        fields += DALI_OPS_INPUTS
        fields.append("median_window" if spec.device == "gpu" else "median_kernel")
        if spec.motion_noise:
            fields += DALI_MOTION_NOISE
    return tuple(fields) + PASS_THROUGH + spec.extra_outputs


class SplitSource:
    """Splits the named feed into two DALI external sources (images, which may live on the
    GPU, and the CPU parameters ``param_fields``, in that order), whichever DALI calls first;
    batches stay paired.

    With ``crop_ahead`` (an `OpenCVCrop`), each batch's frames and crop parameters go to
    ``crop_ahead.submit`` right away and the images output carries the batch's ticket
    (``(B, 1)`` int64) instead of the frames."""

    def __init__(self, source: SourceFn, param_fields: Sequence[str],
                 crop_ahead: OpenCVCrop | None = None, crop_fields: Sequence[str] = CROP_INPUTS):
        self.source = source
        self.param_fields = tuple(param_fields)
        # the parameters as a tuple in one C call (a generator costs a call per field)
        self._take = (lambda feed: ()) if not self.param_fields else \
            (lambda feed, get=itemgetter(*self.param_fields): (get(feed),)) \
            if len(self.param_fields) == 1 else itemgetter(*self.param_fields)
        self.crop_ahead = crop_ahead
        self.crop_fields = tuple(crop_fields)
        self._images: deque = deque()
        self._params: deque = deque()

    def _pull(self) -> None:
        feed = self.source()
        images = feed["images"]
        if self.crop_ahead is not None:
            ticket = self.crop_ahead.submit(images, *(feed[n] for n in self.crop_fields))
            images = np.full((len(images), 1), ticket, dtype=np.int64)
        self._images.append(images)
        self._params.append(self._take(feed))

    def images(self):
        if not self._images:
            self._pull()
        return self._images.popleft()

    def params(self):
        if not self._params:
            self._pull()
        return self._params.popleft()


def output_names(codecs: Sequence[Codec]) -> list[str]:
    """Batch dict keys after the fixed ones: each codec's outputs, ``name/output`` when two
    codecs share an output name."""
    seen: dict[str, int] = {}
    for c in codecs:
        for o in c.output_names:
            seen[o] = seen.get(o, 0) + 1
    return [o if seen[o] == 1 else f"{c.name}/{o}" for c in codecs for o in c.output_names]


def unpack(packing: Packing, fed: dict) -> dict:
    """The parameter fields from the packed inputs (`Packing`) as DALI nodes: per-sample
    slices of ``packed_f32`` / ``packed_i64`` (``x[i]`` for a scalar, ``x[a:b]`` reshaped
    to the field's shape), bools as ``!= 0``, int32 fields cast back; other fields as fed."""
    p = {n: fed[n] for n in packing.rest}
    for key, entries in (("packed_f32", packing.floats), ("packed_i64", packing.ints)):
        for name, start, shape, dt in entries:
            size = int(np.prod(shape, dtype=np.int64))
            x = fed[key][start] if shape == () else fed[key][start:start + size]
            if len(shape) > 1:
                x = fn.reshape(x, shape=list(shape))
            if np.dtype(dt) == np.bool_:
                x = x != 0
            elif np.dtype(dt) == np.int32:
                x = fn.cast(x, dtype=types.INT32)
            p[name] = x
    return p


# -- stages: each takes DALI nodes and the feed's parameters ``p`` and returns nodes ---------
def decode(spec: GraphSpec, images, p):
    """Encoded bytes -> RGB HWC frames ("mixed" = nvJPEG on the GPU; PNG decodes on CPU
    threads either way); with ``spec.roi`` only the region the crop reads. Cached frames pass
    through (host frames are copied to the GPU for a GPU graph)."""
    gpu = spec.device == "gpu"
    if spec.frames is None and spec.opencv and spec.opencv_decode:
        return images                      # bytes: decoded inside the OpenCV stage
    if spec.frames is None and spec.roi:
        return fn.decoders.image_slice(images, p["roi_anchor"], p["roi_shape"],
                                       normalized_anchor=False, normalized_shape=False,
                                       axis_names="WH", output_type=types.RGB,
                                       adjust_orientation=True,  # EXIF: docs/design.md
                                       device="mixed" if gpu else "cpu")
    if spec.frames is None:
        return fn.decoders.image(images, device="mixed" if gpu else "cpu", output_type=types.RGB,
                                 adjust_orientation=True)       # EXIF: docs/design.md
    if gpu and spec.frames == "host":
        return images.gpu()
    return images


def crop_opencv(spec: GraphSpec, frames, p, crop_fn):
    """Affine crop + YOLOX HSV + blur + median blur (+ motion blur) + dropout (+ noise) in one
    OpenCV batch stage (a thread pool); with crop ahead the source already started it and this
    collects."""
    if spec.crop_ahead:
        return fn.python_function(frames, function=crop_fn, batch_processing=True,
                                  output_layouts="HWC")
    return fn.python_function(frames, *(p[n] for n in crop_inputs(spec)), function=crop_fn,
                              batch_processing=True, output_layouts="HWC")


def crop_dali_ops(spec: GraphSpec, frames, p):
    """The same steps with DALI operators (the GPU graph; ``cpu_backend="dali"`` on CPU):
    HSV is multiplicative, and on the CPU the median blur is a box blur of the same size.
    Motion blur: ``fn.filter`` with the line kernel (a correlation, as ``cv2.filter2D``;
    checked on a delta image). Noise: ``fn.noise.gaussian`` with the sampled std and mean
    -0.5: DALI rounds to the nearest uint8, so ``round(x + n - 0.5) = floor(x + n)``, the
    truncation albumentations applies."""
    gpu = spec.device == "gpu"
    w, h = spec.input_size
    # one matrix per sample (output -> input, pixel corners), black border
    crop = fn.warp_affine(frames, matrix=p["warp"], size=(h, w), fill_value=0,
                          interp_type=types.INTERP_LINEAR)
    crop = fn.hsv(crop, hue=p["hue"], saturation=p["saturation"], value=p["value"])
    if p["blur"]:
        kernel = p["blur_kernel"].gpu() if gpu else p["blur_kernel"]
        crop = fn.filter(crop, kernel, border="reflect_101")
    if p["median"]:
        if gpu:
            crop = fn.experimental.median_blur(crop, window_size=p["median_window"])
        else:  # no CPU median filter in DALI: a box blur of the same size instead
            crop = fn.filter(crop, p["median_kernel"], border="reflect_101")
    if spec.motion_noise and p["motion"]:
        kernel = p["motion_kernel"].gpu() if gpu else p["motion_kernel"]
        crop = fn.filter(crop, kernel, border="reflect_101")
    crop = fn.erase(crop, anchor=p["drop_anchor"], shape=p["drop_shape"], axis_names="HW",
                    fill_value=0)
    if spec.motion_noise and p["noise"]:
        crop = fn.noise.gaussian(crop, stddev=p["noise_std"], mean=-0.5)
    return crop


def normalise(spec: GraphSpec, crop):
    """HWC uint8 -> CHW: float32 ImageNet-normalised (`MEAN`, `STD`, 0..255 units) or uint8."""
    if spec.image_dtype == "uint8":
        return fn.transpose(crop, perm=[2, 0, 1], output_layout="CHW")
    return fn.crop_mirror_normalize(crop, dtype=types.FLOAT, output_layout="CHW",
                                    mean=list(MEAN), std=list(STD))


def targets(spec: GraphSpec, keypoints, codecs: Sequence[Codec], encoders) -> list:
    """Each codec's outputs, encoded by a batch ``python_function`` inside the graph."""
    outs: list = []
    for codec, encode in zip(codecs, encoders):
        o = fn.python_function(keypoints, function=encode, batch_processing=True,
                               num_outputs=len(codec.output_names), device=spec.device)
        outs += list(o) if isinstance(o, (list, tuple)) else [o]
    return outs


def build_pipeline(spec: GraphSpec, source: SourceFn, codecs: Sequence[Codec], batch_size: int,
                   num_threads: int, device_id: int | None, prefetch: int = PREFETCH,
                   frames_stream=None, packing: Packing | None = None):
    """Build the (not yet started) DALI pipeline. Outputs, in order: image, keypoints, index,
    affine, ``spec.extra_outputs``, then, when ``codecs`` are given (encoded inside the
    graph), each codec's outputs
    (see `output_names`). ``source`` returns the named feed with `graph_fields` ``(spec)``.
    ``frames_stream``: the CUDA stream device frames are gathered on (DALI orders its reads
    after it). ``packing``: the source feeds the parameters packed (`Packing`; with
    ``spec.packed``), sliced back here."""
    gpu = spec.device == "gpu"
    if spec.packed and packing is None:
        raise ValueError("this graph reads packed parameters: pass the source's packing")
    # the feed worker (`feed_process`) reuses a batch's slot HOLD batches after the graph took
    # it; the graph reads the slot's views until it has collected that batch (the OpenCV
    # stage's read-ahead crops from them in its pool), up to `prefetch` iterations later,
    # plus the iteration running and one spare: a deeper queue would crop overwritten values
    if getattr(source, "lookahead", None) == "process" and prefetch + 2 > HOLD:
        raise ValueError(f"prefetch {prefetch} needs the feed worker to hold each batch's slot "
                         f"{prefetch + 2} batches (feed_process.HOLD is {HOLD}); use "
                         f"prefetch <= {HOLD - 2} or lookahead='thread'")
    fields = packing.outputs if spec.packed else graph_params(spec)
    # crop ahead: the pool works beside DALI's threads and the main thread, and its threads
    # wait for the GIL between OpenCV calls; one more thread than num_threads keeps the
    # cores busy (measured: +7 % samples/s on 2 cores; docs/benchmarks.md)
    cv_stage = None
    if spec.opencv:
        cv_stage = OpenCVCrop(spec.input_size, num_threads + 1 if spec.crop_ahead else num_threads)
    # Everything Python that runs per batch is made here, outside the pipeline definition,
    # and marked do_not_convert: with conditionals on, DALI's AutoGraph rewrites every
    # function *called* inside the definition (and all it calls at run time), which made the
    # codecs' adapters ~25x slower and starved the OpenCV threads of the GIL.
    split = SplitSource(source, fields, crop_ahead=cv_stage if spec.crop_ahead else None,
                        crop_fields=crop_inputs(spec))
    read_images, read_params = do_not_convert(split.images), do_not_convert(split.params)
    encoders = [do_not_convert(c.dali_function()) for c in codecs]
    crop_fn = None
    if cv_stage is not None:
        crop_fn = do_not_convert(cv_stage.collect if spec.crop_ahead else cv_stage)

    @pipeline_def(batch_size=batch_size, num_threads=num_threads,
                  device_id=device_id if gpu else None, enable_conditionals=True,
                  prefetch_queue_depth=prefetch)
    def pose_pipeline():
        # cached frames are read in place (no_copy): host frames live as long as the loader;
        # on the GPU path every cached batch is one dense slot of a ring the loader keeps
        # until DALI is done with it (`posefeed.pipelines.slab`)
        images = fn.external_source(source=read_images, batch=True,
                                    layout="HWC" if spec.frames and not spec.crop_ahead else "",
                                    device="gpu" if spec.frames == "device" else "cpu",
                                    no_copy=spec.frames is not None and not spec.crop_ahead,
                                    cuda_stream=frames_stream)
        fed = fn.external_source(source=read_params, num_outputs=len(fields), batch=True)
        p = dict(zip(fields, fed if isinstance(fed, (list, tuple)) else [fed]))
        if spec.packed:
            p = unpack(packing, p)
        frames = decode(spec, images, p)
        crop = crop_opencv(spec, frames, p, crop_fn) if spec.opencv else \
            crop_dali_ops(spec, frames, p)
        image = normalise(spec, crop)
        keypoints, index, affine, *extra = (p[n].gpu() if gpu else p[n]
                                            for n in PASS_THROUGH + spec.extra_outputs)
        return (image, keypoints, index, affine, *extra,
                *targets(spec, keypoints, codecs, encoders))

    pipe = pose_pipeline()
    #: objects with a ``close()`` that own threads (closed with the pipeline by PoseLoader)
    pipe.posefeed_resources = [cv_stage] if cv_stage is not None else []
    return pipe
