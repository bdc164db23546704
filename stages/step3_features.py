"""Step 3: cache the features of the step-2 backbone, frozen from here on."""

from pipeline import steps
from pipeline.runner import stage

main = stage(steps.step3_features)

if __name__ == "__main__":
    main()
