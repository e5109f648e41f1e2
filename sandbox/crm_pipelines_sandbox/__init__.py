"""The sandbox of crm-pipelines: everything the demo, the UI and the tests run against, never the product."""
