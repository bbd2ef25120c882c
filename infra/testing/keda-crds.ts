import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { Ajv } from "ajv";
import YAML from "yaml";
import { kedaApiVersion, kedaVersion } from "../keda";

/** The Go module whose source tree carries KEDA's CRDs, at the release the program installs. */
export const kedaModule = `github.com/kedacore/keda/v2@v${kedaVersion}`;

/** The CRD files of the KEDA kinds the program declares, as KEDA's source tree names them. */
const crdFiles = {
  ScaledObject: "keda.sh_scaledobjects.yaml",
  TriggerAuthentication: "keda.sh_triggerauthentications.yaml",
} as const;
export type KedaKind = keyof typeof crdFiles;

let directory: string | undefined;

/**
 * `config/crd/bases` of KEDA's source at {@link kedaVersion}, fetched once through the Go module
 * proxy (`go mod download`, cached in the module cache) so the CRDs are always those of the
 * release the program pins, and none is copied into this repository.
 */
export function kedaCrdDirectory(): string {
  if (directory !== undefined) return directory;
  let output: string;
  try {
    output = execFileSync("go", ["mod", "download", "-json", kedaModule], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      // Outside any module of ours: `go mod download` of a module path needs no go.mod.
      cwd: path.parse(process.cwd()).root,
      env: { ...process.env, GOFLAGS: "-mod=mod" },
    });
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? "";
    throw new Error(
      `could not fetch KEDA's CRDs (go mod download ${kedaModule}): ${stderr.trim() || String(error)}; the tests need Go and its module proxy`,
    );
  }
  const { Dir } = JSON.parse(output) as { Dir?: string };
  if (!Dir) throw new Error(`go mod download ${kedaModule} named no directory: ${output}`);
  directory = path.join(Dir, "config", "crd", "bases");
  return directory;
}

/** The CRD of a KEDA kind, as its release ships it. */
export function kedaCrd(kind: KedaKind): Record<string, unknown> {
  return YAML.parse(readFileSync(path.join(kedaCrdDirectory(), crdFiles[kind]), "utf8"));
}

/**
 * The schema with every object that lists its fields closed to others, as the API server's strict
 * field validation (`kubectl apply --validate=strict`) treats them: a misspelt field fails here
 * instead of being dropped without a word. Objects marked to keep unknown fields stay open.
 */
function closed(schema: Record<string, unknown>): Record<string, unknown> {
  if (
    schema.properties !== undefined &&
    schema.additionalProperties === undefined &&
    schema["x-kubernetes-preserve-unknown-fields"] !== true
  ) {
    schema.additionalProperties = false;
  }
  for (const value of Object.values(schema)) {
    if (Array.isArray(value)) {
      for (const item of value) if (isObject(item)) closed(item);
    } else if (isObject(value)) {
      closed(value);
    }
  }
  return schema;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

interface CrdVersion {
  name: string;
  served: boolean;
  schema: { openAPIV3Schema: Record<string, unknown> };
}

/**
 * Validates an object against the OpenAPI schema of its KEDA CRD at the version the program
 * declares (CEL rules, `x-kubernetes-validations`, are the API server's to check: the e2e does).
 */
export function kedaValidator(kind: KedaKind): (data: Record<string, unknown>) => void {
  const crd = kedaCrd(kind) as { spec: { versions: CrdVersion[] } };
  const version = kedaApiVersion.split("/")[1];
  const served = crd.spec.versions.find((v) => v.name === version && v.served);
  if (!served) throw new Error(`KEDA ${kedaVersion} serves no ${kind} at ${kedaApiVersion}`);
  // Kubernetes' own keywords (x-kubernetes-*) and formats (int32, int-or-string) are not JSON
  // Schema's: ajv is told to skip them rather than fail on them.
  const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
  const validate = ajv.compile(closed(structuredClone(served.schema.openAPIV3Schema)));
  return (data) => {
    if (!validate(data)) {
      throw new Error(
        `${kind} does not match KEDA ${kedaVersion}'s CRD: ${ajv.errorsText(validate.errors, { dataVar: kind })}`,
      );
    }
  };
}
