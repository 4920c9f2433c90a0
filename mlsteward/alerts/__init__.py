"""Alerts: standing rules' verdicts turned into incidents, Prefect events, audit records and
notifications (``observe``), and the Prefect automations that deliver them (``automations``)."""
