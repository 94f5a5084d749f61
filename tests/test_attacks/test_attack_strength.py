"""Attack strength on the (test-sized) trained demo model."""
import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from mmseg_fnm.attacks import BIM, FGSM, SegmentorAttacker
from mmseg_fnm.attacks.base import cross_entropy_sum, uniform_like

EPS = 0.02


def test_bim_beats_fgsm_beats_random_signs(trained_demo):
    cfg, checkpoint = trained_demo
    init_default_scope('mmseg')
    runner = Runner.from_cfg(cfg.copy())
    runner.load_checkpoint(checkpoint)
    model = runner.model.eval()
    dataset = runner.val_dataloader.dataset
    batch = pseudo_collate([dataset[i] for i in range(len(dataset))])
    attacker = SegmentorAttacker()
    with attacker.attack_context(model):
        problem = attacker.problem(model, batch, 'loss')

        def loss(images):
            with torch.no_grad():
                return cross_entropy_sum(problem.forward(images),
                                         problem.labels, 255).sum().item()

        clean = loss(problem.images)
        signs = uniform_like(problem.images.shape,
                             torch.tensor(-1.), torch.tensor(1.),
                             torch.Generator().manual_seed(0),
                             problem.images.device).sign()
        noise = loss((problem.images + EPS * signs).clamp(0, 1))
        fgsm = loss(FGSM(EPS)(problem.forward, problem.images,
                              problem.labels).images)
        bim = loss(BIM(EPS, alpha=0.004, steps=10)(
            problem.forward, problem.images, problem.labels).images)
    assert bim > fgsm > noise
    assert fgsm > clean
