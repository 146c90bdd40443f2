"""``python -m training.models``: print every registered model's parameter count and code size."""
from __future__ import annotations

from training.models import MODEL_NAMES, build_model, count_parameters


def main() -> None:
    master = count_parameters(build_model("master3d"))
    print(f"{'model':<18}{'input':<7}{'d':>6}{'parameters':>13}{'vs master3d':>13}")
    for name in MODEL_NAMES:
        model = build_model(name)
        count = count_parameters(model)
        print(f"{name:<18}{model.modality:<7}{model.embedding_dim:>6}{count:>13,}"
              f"{master / count:>12.2f}x")


if __name__ == "__main__":
    main()
