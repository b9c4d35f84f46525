"""What every long run needs, whatever it trains: atomic files (:mod:`.files`), checksummed
rotating checkpoints (:mod:`.checkpoints`), SIGINT/SIGTERM handling (:mod:`.signals`),
torch.distributed under torchrun (:mod:`.distributed`), the thread policy (:mod:`.threads`)
and the one resumable loop (:mod:`.loop`). Nothing here knows about NAS."""
