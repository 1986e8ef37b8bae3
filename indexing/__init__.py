"""`atomize index`: a user's corpus atomized with a bundle into a searchable bank folder.

An application on top of the contract: it reads the corpus (`corpus`), runs the bundle's model
through `contract.runner.ModelRunner` (`atomizer`, on one machine or in Ray actors:
`ray_atomize`), writes resumable shards (`shards`) and joins them into a bank
(`indexer`, written by `contract.bank.write_bank`).
"""
