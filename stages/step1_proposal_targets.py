"""step1_proposal_targets: IoU, class and box target of every step-1 train proposal, the
candidates of step 2's mini-batches. `step4_proposal_targets` does the same for step 3's."""

from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.proposal_targets import write_proposal_targets
from pipeline.artifacts.proposals import Proposals
from pipeline.artifacts.store import Provenance
from pipeline.config import Params
from pipeline.data.views import ViewSet
from pipeline.layout import PREPARE, STEP1_PROPOSAL_TARGETS, STEP1_PROPOSALS, Stage
from pipeline.runner import stage_command


def targets_of(params: Params, source: Stage, stage: Stage) -> dict:
    """Targets of the proposals `source` wrote, as `stage`'s output."""
    prepared = PreparedDataset(PREPARE.out)
    proposals = Proposals(source.out, source.name)
    provenance = Provenance.of_stage(
        stage,
        params={"roi": {"box_stds": list(params.roi.box_stds)}, "store": params.store.sharding()},
        inputs={source.name: proposals.fingerprint, "prepared": prepared.fingerprint},
    )
    views = ViewSet(prepared, proposals.views)
    return write_proposal_targets(
        stage.out, provenance, proposals, views, params.roi.box_stds, params.store.shard_size
    )


def run(params: Params) -> dict:
    """Step 1: IoU, class and box target of every step-1 train proposal."""
    return targets_of(params, STEP1_PROPOSALS, STEP1_PROPOSAL_TARGETS)


main = stage_command(STEP1_PROPOSAL_TARGETS, run, ranks=True)

if __name__ == "__main__":
    main()
