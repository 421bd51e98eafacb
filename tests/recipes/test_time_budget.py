"""reproduce.TimeBudget: fits a stage into its wall-clock budget and gives steps back when the machine speeds up."""

from types import SimpleNamespace

from training.recipes.astrai_mini import reproduce


def test_time_budget_lowers_then_restores_max_steps(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(reproduce.time, "time", lambda: clock[0])
    trainer = SimpleNamespace(step=0, config=SimpleNamespace(max_steps=1000))
    budget = reproduce.TimeBudget(seconds=1000.0, log=lambda msg: None, every=10)
    budget.on_train_start(trainer)

    def run(steps: int, seconds_per_step: float) -> None:
        for _ in range(steps):
            trainer.step += 1
            clock[0] += seconds_per_step
            budget.on_step_end(trainer, {})

    run(10, 2.0)  # 2 s/step: 950 s of budget left for 1000 steps is not enough
    lowered = trainer.config.max_steps
    assert lowered == 10 + int((950 - 20) / 2.0)
    run(10, 0.1)  # the neighbour left: 20 steps in 21 s -> the plan grows again
    assert trainer.config.max_steps == 20 + int((950 - 21) / 1.05) > lowered
    run(200, 0.1)  # fast enough for everything: back to the configured steps
    assert trainer.config.max_steps == 1000
    run(10, 0.5)  # never above the configured steps, never below the next step
    assert 30 < trainer.config.max_steps <= 1000
