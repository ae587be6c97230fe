"""Create the PostgreSQL database of DATABASE_URL if it does not exist (`make serve`)."""

import os

import dj_database_url
import psycopg
from psycopg import sql

config = dj_database_url.parse(os.environ["DATABASE_URL"])
admin = {"dbname": "postgres", "user": config["USER"], "password": config["PASSWORD"], "host": config["HOST"], "port": config["PORT"]}
with psycopg.connect(**{key: value for key, value in admin.items() if value}, autocommit=True) as connection:
    if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]]).fetchone():
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config["NAME"])))
        print(f"created database {config['NAME']}")
