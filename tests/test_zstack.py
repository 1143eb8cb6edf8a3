"""Z-stacks: the classical answer over the volume (3D biharmonic with the voxel spacing), what
a TIFF says its stack is, and the refusals of a bad spacing or stack before any work."""

import numpy as np
import pytest
import tifffile
from scipy.ndimage import gaussian_filter

import src_core
from src_core import DIPError
from src_core.classical import biharmonic_volume
from src_core.io import read_input, tiff_volume

TINY = dict(preset="cpu", scales=2, down_channels=4, up_channels=4, skip_channels=2, iterations=3, report_every=3)


def volume(depth=6, size=16, seed=0):
    """(Z, 1, Y, X) smooth structure shared by the planes, with half the voxels missing."""
    rng = np.random.default_rng(seed)
    truth = gaussian_filter(rng.random((depth, size, size)), (1.5, 2, 2))
    truth = ((truth - truth.min()) / np.ptp(truth)).astype(np.float32)[:, None]
    known = rng.random(truth.shape) >= 0.5
    return truth, known, np.where(known, truth, 0).astype(np.float32)


def test_3d_biharmonic_is_scikit_images_at_unit_spacing_and_per_slice_when_planes_are_far():
    from skimage.restoration import inpaint_biharmonic

    truth, known, observed = volume()
    ours = biharmonic_volume(observed, known)
    theirs = np.clip(inpaint_biharmonic(observed[:, 0], ~known[:, 0]), 0, 1)
    # the same energy, solved iteratively (scikit-image's stencil differs on the outermost ring)
    assert np.abs(ours[:, 0] - theirs)[:, 1:-1, 1:-1].max() < 1e-4
    assert np.array_equal(ours[known], observed[known])  # observed voxels are kept exactly
    # planes a thousand pixels apart barely talk: the fill becomes each plane's own
    far = biharmonic_volume(observed, known, spacing=(1000.0, 1.0, 1.0))
    per_slice = np.concatenate([biharmonic_volume(o[None], k[None]) for o, k in zip(observed, known)])
    assert np.abs(far - per_slice).max() < 1e-3
    assert np.abs(far - ours).max() > 1e-2  # and the spacing did change the answer


def test_a_z_stack_gets_the_3d_classical_answer_in_every_slice_and_part():
    truth, known, _ = volume()
    image = (truth[:, 0] * 255).astype(np.uint8)
    result = src_core.restore(image, known[:, 0], task="inpaint", validate=0, stack="z", spacing=(2, 1, 1), **TINY)
    assert any("over the z-stack in 3D on the voxel grid or with the spacing z 2, y 1, x 1" in n for n in result.notes)
    # nothing held out to choose by: the voxel grid, which filled better on the anisotropic phantom
    expected = biharmonic_volume(image[:, None].astype(np.float32) / 255 * known, known)[:, 0]
    assert np.abs(result.classical.astype(np.float32) / 255 - expected).max() <= 1 / 255 + 1e-6
    flat = src_core.restore(image, known[:, 0], task="inpaint", validate=0, **TINY)
    assert not any("z-stack" in n for n in flat.notes)
    assert not np.array_equal(flat.classical, result.classical)  # per slice is another answer
    # a time-lapse, a lazy stack or a method with no 3D form stays per slice, and says why
    tv = src_core.prepare(image, known[:, 0], task="inpaint", stack="z", classical="tv", **TINY)
    assert not tv.volumetric and any("tv per slice (tv has no 3D form here)" in n for n in tv.notes)
    assert not src_core.prepare(image, known[:, 0], task="inpaint", stack="t", **TINY).volumetric


def test_the_held_out_voxels_choose_between_the_grid_and_the_files_spacing():
    truth, known, _ = volume(depth=6, size=48)
    image = (truth[:, 0] * 255).astype(np.uint8)
    problem = src_core.prepare(image, known[:, 0], task="inpaint", stack="z", spacing=(4, 1, 1), validate=0.1,
                               **TINY)
    assert problem.volumetric and problem.held_out is not None
    answer = problem.classical_answer(0)[0]
    note = [n for n in problem.notes if n.startswith("classical 3D:")]
    assert len(note) == 1 and "held-out PSNR the voxel grid" in note[0] and "spacing z 4, y 1, x 1" in note[0]
    chosen = problem._volume["spacing"]
    assert note[0].startswith(f"classical 3D: {problem._spacing_name(chosen)} kept")
    expected = biharmonic_volume(problem.images, problem.masks, chosen)
    assert np.abs(answer - expected[0]).max() < 1e-5  # the whole answer, made with the chosen spacing
    part = problem.part(3)  # a part carries its plane of the volume's answers
    assert np.abs(part.classical_answer(0)[0] - expected[3]).max() < 1e-5


def test_a_tiff_says_whether_its_stack_is_z_or_t_and_its_voxel_spacing(tmp_path):
    stack = (np.random.default_rng(0).random((3, 8, 8)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "z.ome.tif", stack, ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeZ": 0.5, "PhysicalSizeZUnit": "um",
                               "PhysicalSizeY": 100.0, "PhysicalSizeYUnit": "nm",
                               "PhysicalSizeX": 100.0, "PhysicalSizeXUnit": "nm"})
    tifffile.imwrite(tmp_path / "z_ij.tif", stack, imagej=True, resolution=(4.0, 4.0),
                     metadata={"axes": "ZYX", "spacing": 1.5, "unit": "um"})
    tifffile.imwrite(tmp_path / "t_ij.tif", stack, imagej=True, metadata={"axes": "TYX"})
    tifffile.imwrite(tmp_path / "plain.tif", stack)
    assert tiff_volume(tmp_path / "z.ome.tif") == ("z", pytest.approx((0.5, 0.1, 0.1)))  # one unit: um
    assert tiff_volume(tmp_path / "z_ij.tif") == ("z", pytest.approx((1.5, 0.25, 0.25)))
    assert tiff_volume(tmp_path / "t_ij.tif") == ("t", None)
    assert tiff_volume(tmp_path / "plain.tif") == (None, None)  # tifffile's guess is not the file's word
    form = read_input(tmp_path / "z.ome.tif")[2]
    assert (form.stack, form.spacing) == ("z", pytest.approx((0.5, 0.1, 0.1)))


def test_the_command_line_runs_a_z_stack_in_3d_from_the_file_and_t_when_asked(tmp_path, capsys):
    from src_core.cli import main

    truth, _, _ = volume(depth=3)
    tifffile.imwrite(tmp_path / "z.tif", (truth[:, 0] * 255).astype(np.uint8), imagej=True,
                     resolution=(1.0, 1.0), metadata={"axes": "ZYX", "spacing": 3.0})
    args = ["random", str(tmp_path / "z.tif"), "--preset", "cpu", "--iterations", "2", "--set", "scales=2",
            "-o", str(tmp_path / "out")]
    assert main(args) == 0
    assert "biharmonic over the z-stack in 3D on the voxel grid or with the spacing z 3, y 1, x 1" in (
        capsys.readouterr().out)
    assert main(args + ["--stack", "t", "--overwrite"]) == 0
    assert "z-stack" not in capsys.readouterr().out


@pytest.mark.parametrize("spacing", [(0, 1, 1), (float("nan"), 1, 1), (1, 1), (-2, 1, 1), "2"])
def test_a_bad_spacing_is_refused_before_any_work(spacing, monkeypatch):
    monkeypatch.setattr(src_core.problem.Problem, "run", lambda *a, **k: pytest.fail("a run started"))
    image = np.zeros((3, 16, 16), np.uint8)
    with pytest.raises(DIPError, match="a voxel spacing is three positive numbers"):
        src_core.restore(image, task="random", spacing=spacing, **TINY)


def test_a_bad_stack_kind_or_a_spacing_for_a_time_lapse_is_refused():
    image = np.zeros((3, 16, 16), np.uint8)
    with pytest.raises(DIPError, match="stack must be 'z'"):
        src_core.prepare(image, task="random", stack="x", **TINY)
    with pytest.raises(DIPError, match="a voxel spacing is for a z-stack"):
        src_core.prepare(image, task="random", stack="t", spacing=(2, 1, 1), **TINY)


def test_a_stack_of_slices_of_different_shapes_is_refused_saying_which():
    with pytest.raises(DIPError, match=r"one shape; these have 2: \(8, 8\), \(16, 16\)"):
        src_core.restore([np.zeros((16, 16)), np.zeros((8, 8))], task="random", **TINY)


# ------------------------------------------------------------------ 3D PSFs: deconvolving a z-stack

def test_a_3d_gaussian_psf_has_the_2d_one_as_its_in_focus_plane_and_a_bead_stack_its_sharpest():
    from src_core.operators import Blur, gaussian_psf, in_focus_plane

    psf = gaussian_psf(1.5, sigma_z=2.0)
    assert psf.shape == (13, 11, 11) and abs(float(psf.sum()) - 1) < 1e-6
    blur = Blur(psf)
    assert blur.focus == 6 and np.allclose(blur.psf, gaussian_psf(1.5), atol=1e-7)
    assert blur.describe()["psf_volume_shape"] == [13, 11, 11]
    assert "psf_volume_shape" not in Blur(gaussian_psf(1.5)).describe()  # a 2D PSF's fingerprint is unchanged
    # a measured bead stack need not be centred: its in-focus plane is where its peak is highest
    bead = np.stack([gaussian_psf(s, size=9) for s in (3.0, 2.0, 1.0, 1.5, 2.5)])
    assert in_focus_plane(bead) == 2 and np.allclose(Blur(bead).psf, bead[2] / bead[2].sum())


def test_3d_richardson_lucy_keeps_a_flat_stack_flat_and_sharpens_a_blurred_bead_keeping_its_light():
    from scipy.signal import fftconvolve

    from src_core.classical import richardson_lucy_volume
    from src_core.operators import gaussian_psf

    tall = gaussian_psf(1.0, sigma_z=3.0)  # 19 planes on a 5-plane stack: light from far beyond its ends
    flat = np.full((5, 1, 16, 16), 0.4, np.float32)
    assert np.abs(richardson_lucy_volume(flat, tall, 30) - 0.4).max() < 1e-5
    bead = np.zeros((9, 24, 24))
    bead[4, 11:13, 11:13] = 1.0
    psf = gaussian_psf(1.5, sigma_z=1.5)
    blurred = np.clip(fftconvolve(bead, psf, mode="same"), 0, None)[:, None]
    sharp = richardson_lucy_volume(blurred, psf, 30)[:, 0]
    assert sharp.max() > 2 * blurred.max()                       # the light gathers back into the bead
    assert abs(sharp.sum() - bead.sum()) < 0.02 * bead.sum()     # and none is made or lost
    assert np.unravel_index(sharp.argmax(), sharp.shape)[0] == 4


def test_a_z_stack_with_a_3d_psf_gets_3d_richardson_lucy_and_dip_its_in_focus_plane():
    from src_core.classical import fill_from_neighbours, richardson_lucy_volume
    from src_core.operators import gaussian_psf

    truth, _, _ = volume(depth=4, size=48)
    psf = gaussian_psf(1.0, sigma_z=1.0)
    problem = src_core.prepare(truth[:, 0], task="deconvolve", psf=1.0, psf_z=1.0, stack="z", **TINY)
    assert problem.volumetric and problem.operator.volume.shape == (7, 7, 7)
    assert any("richardson-lucy over the z-stack in 3D with the 7-plane PSF" in n for n in problem.notes)
    assert np.array_equal(problem.operator.weight[0, 0].numpy(), problem.operator.psf[::-1, ::-1])  # 2D per slice
    fitted = problem.masks & ~problem.held_out
    filled = np.stack([fill_from_neighbours(i, m) for i, m in zip(problem.images, fitted)])
    expected = richardson_lucy_volume(filled, psf)
    assert np.abs(problem.classical_answer(2, fitted_only=True)[0] - expected[2]).max() < 1e-5
    # a stack of no stated kind with a 3D PSF is a z-stack; a 2D PSF stays per slice, and says why
    assert src_core.prepare(truth[:, 0], task="deconvolve", psf=psf, **TINY).volumetric
    flat = src_core.prepare(truth[:, 0], task="deconvolve", psf=1.0, stack="z", **TINY)
    assert not flat.volumetric and any("per slice (the PSF is 2D" in n for n in flat.notes)


@pytest.mark.parametrize("data, options, words", [
    ("image", {"psf": "3d"}, "the data is one image: a 3D PSF is for a z-stack"),
    ("stack", {"psf": "3d", "stack": "t"}, "the data is a time-lapse"),
    ("stack", {"psf": "4d"}, "must be 2D .Y, X., or 3D"),
    ("stack", {"psf": "tall"}, "has 13 planes, more than twice the stack's 4"),
    ("stack", {"psf": "3d", "psf_z": 2.0}, "a PSF given as an image is used as it is"),
    ("stack", {"psf": 1.0, "psf_z": -1.0}, "psf_z is the PSF's Gaussian sigma along z"),
])
def test_a_3d_psf_that_does_not_fit_the_data_is_refused_before_any_work(data, options, words, monkeypatch):
    from src_core.operators import gaussian_psf

    monkeypatch.setattr(src_core.problem.Problem, "run", lambda *a, **k: pytest.fail("a run started"))
    psfs = {"3d": gaussian_psf(1.0, sigma_z=1.0), "4d": np.ones((2, 2, 3, 3)),
            "tall": gaussian_psf(1.0, sigma_z=2.0)}
    options = {k: psfs.get(v, v) if k == "psf" else v for k, v in options.items()}
    image = np.zeros((4, 16, 16), np.float32) if data == "stack" else np.zeros((16, 16), np.float32)
    with pytest.raises(DIPError, match=words):
        src_core.restore(image, task="deconvolve", **options, **TINY)


def test_the_command_line_deconvolves_a_z_stack_with_a_psf_stack_file_or_sigma_z(tmp_path, capsys):
    from src_core.cli import main
    from src_core.operators import gaussian_psf

    truth, _, _ = volume(depth=4, size=32)
    tifffile.imwrite(tmp_path / "z.tif", (truth[:, 0] * 255).astype(np.uint8), imagej=True,
                     metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "bead.tif", gaussian_psf(1.0, sigma_z=1.0))
    common = ["--preset", "cpu", "--iterations", "2", "--set", "scales=2", "-o", str(tmp_path / "out")]
    assert main(["deconvolve", str(tmp_path / "z.tif"), "--psf", str(tmp_path / "bead.tif"), *common]) == 0
    assert "richardson-lucy over the z-stack in 3D with the 7-plane PSF" in capsys.readouterr().out
    assert main(["deconvolve", str(tmp_path / "z.tif"), "--psf", "1.0", "--psf-z", "1.0", *common,
                 "--overwrite"]) == 0
    assert "3D with the 7-plane PSF" in capsys.readouterr().out
    assert main(["deconvolve", str(tmp_path / "z.tif"), "--psf-z", "wide", *common, "--overwrite"]) == 2
    assert "--psf-z takes a number" in capsys.readouterr().err


def test_tiles_of_a_z_stack_with_a_3d_psf_are_refused_naming_the_in_focus_plane(monkeypatch):
    from src_core.operators import gaussian_psf

    monkeypatch.setattr(src_core.problem.Problem, "run", lambda *a, **k: pytest.fail("a run started"))
    with pytest.raises(DIPError, match=r"tile it with the PSF's in-focus plane, psf\[3\]"):
        src_core.restore_tiled(np.zeros((4, 64, 64), np.float32), task="deconvolve", stack="z", tile=32,
                               psf=gaussian_psf(1.0, sigma_z=1.0), **TINY)


def test_the_command_line_takes_a_stacks_mask_as_planes_one_for_each_slice(tmp_path, capsys):
    from src_core.cli import main

    truth, _, _ = volume(depth=3, size=32)
    tifffile.imwrite(tmp_path / "z.tif", (truth[:, 0] * 255).astype(np.uint8), imagej=True, metadata={"axes": "ZYX"})
    holes = np.full((3, 32, 32), 255, np.uint8)
    holes[1, 8:20, 8:20] = 0  # a hole in the middle slice only
    tifffile.imwrite(tmp_path / "holes.tif", holes)
    common = ["--preset", "cpu", "--iterations", "2", "--set", "scales=2", "-o", str(tmp_path / "out")]
    assert main(["inpaint", str(tmp_path / "z.tif"), "--mask", str(tmp_path / "holes.tif"), *common]) == 0
    assert "a stack of 3 mask planes, one for each slice" in capsys.readouterr().out
    corrupted = tifffile.imread(tmp_path / "out" / "z_corrupted.tif")
    assert (corrupted[1, 8:20, 8:20] == 0).all() and (corrupted[[0, 2], 8:20, 8:20] > 0).any()
    tifffile.imwrite(tmp_path / "two.tif", holes[:2])
    assert main(["inpaint", str(tmp_path / "z.tif"), "--mask", str(tmp_path / "two.tif"), *common, "--overwrite"]) == 2
    assert "or (3, 32, 32) (one per slice)" in capsys.readouterr().err


def test_with_a_3d_psf_the_blend_judges_both_by_what_the_volume_predicts_through_the_whole_psf():
    """The neighbouring planes' light reaches each plane: the 3D partner is judged by its whole
    volume's 3D blur on the held-out pixels, DIP as that volume with its plane swapped in."""
    from src_core.classical import blur_volume
    from src_core.operators import gaussian_psf
    from src_core.problem import _psnr

    truth, _, _ = volume(depth=4, size=48)
    psf = gaussian_psf(1.0, sigma_z=1.0)
    problem = src_core.prepare(truth[:, 0], task="deconvolve", psf=psf, stack="z", **TINY)
    result = src_core.restore_problem(problem, truth[:, 0])
    fitted = np.stack([problem.classical_answer(i, fitted_only=True)[0] for i in range(4)])
    seen = blur_volume(fitted, psf)
    for k, history in enumerate(result.histories):
        held = problem.held_out[k]
        expected = _psnr(seen[k][held], problem.images[k][held], problem.psnr_peak)
        assert history.summary["val_psnr_classical"] == pytest.approx(expected, abs=1e-6)
        assert 0.0 <= history.summary["blend_alpha"] <= 1.0
    # the in-focus plane alone would have judged the partner otherwise
    alone = _psnr(problem.observe(fitted[1])[problem.held_out[1]], problem.images[1][problem.held_out[1]],
                  problem.psnr_peak)
    assert abs(alone - result.histories[1].summary["val_psnr_classical"]) > 0.1
