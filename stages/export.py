"""Put the step-2 backbone, step-3 RPN and step-4 head into one detector."""

from pipeline import steps
from pipeline.runner import stage

main = stage(steps.export)

if __name__ == "__main__":
    main()
