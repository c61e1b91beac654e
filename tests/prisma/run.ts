// Runs Prisma Client calls for tests/prisma/test_prisma_client.py and prints their results as JSON.
//
//   CLIENT=<folder of a generated client> DATABASE_URL=... tsx run.ts '<JSON list of calls>'
//
// Each call is {"model": "workerJob", "op": "create", "args": {...}}: the client's own method,
// with its own arguments, so the test says exactly what the seed's service would do. A call
// that fails gives {"error": <Prisma's code, e.g. P2002>, "message": ...} and the next runs.
// Values Prisma returns that JSON cannot carry are written out: dates as ISO strings, and
// BigInt and Decimal as strings.
import path from "node:path";
import { pathToFileURL } from "node:url";
import { PrismaPg } from "@prisma/adapter-pg";

type Call = { model: string; op: string; args?: unknown };

const { PrismaClient } = await import(pathToFileURL(path.join(process.env.CLIENT!, "client.ts")).href);
const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: process.env.DATABASE_URL! }) });
const results: unknown[] = [];
try {
  for (const call of JSON.parse(process.argv[2]) as Call[]) {
    try {
      results.push(await prisma[call.model][call.op](call.args));
    } catch (error) {
      const e = error as { code?: string; message?: string };
      results.push({ error: e.code ?? "no code", message: String(e.message ?? error).split("\n").slice(-2).join(" ") });
    }
  }
} finally {
  await prisma.$disconnect();
}
process.stdout.write(JSON.stringify(results, (_key, value) =>
  typeof value === "bigint" ? value.toString() : value));
