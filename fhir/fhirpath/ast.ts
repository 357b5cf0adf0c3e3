/**
 * The FHIRPath abstract syntax tree produced by the parser and consumed by the compiler. Every node
 * carries `pos`, the 0-based offset of its first token, for error messages.
 *
 * @module
 */

/** A literal value. `number` keeps its source text so decimal precision is not lost. */
export type LiteralNode =
  | { kind: "string"; value: string; pos: number }
  | { kind: "number"; text: string; pos: number }
  | { kind: "boolean"; value: boolean; pos: number }
  | { kind: "datetime"; text: string; pos: number }
  | { kind: "empty"; pos: number };

/** A name resolved against the focus: a child element, or a resource type name at the root. */
export interface MemberNode {
  kind: "member";
  name: string;
  pos: number;
}

/** A function call, `name(args)`; `target` is the invocation target (undefined for a leading call). */
export interface CallNode {
  kind: "call";
  name: string;
  args: ExprNode[];
  pos: number;
}

/** `target.step`: navigation or a function call on the result of `target`. */
export interface InvokeNode {
  kind: "invoke";
  target: ExprNode;
  step: MemberNode | CallNode;
  pos: number;
}

/** `target[index]`. */
export interface IndexerNode {
  kind: "indexer";
  target: ExprNode;
  index: ExprNode;
  pos: number;
}

/** `$this`, `$index` or `$total`. */
export interface SpecialNode {
  kind: "special";
  name: "$this" | "$index" | "$total";
  pos: number;
}

/** `%name`: a constant or an environment variable. */
export interface EnvNode {
  kind: "env";
  name: string;
  pos: number;
}

/** Unary `+` or `-`. */
export interface UnaryNode {
  kind: "unary";
  op: "+" | "-";
  operand: ExprNode;
  pos: number;
}

/** A binary operator. */
export interface BinaryNode {
  kind: "binary";
  op: string;
  left: ExprNode;
  right: ExprNode;
  pos: number;
}

/** `left is Type` / `left as Type`. */
export interface TypeOpNode {
  kind: "typeop";
  op: "is" | "as";
  left: ExprNode;
  type: TypeSpecifier;
  pos: number;
}

/** A type name, optionally qualified (`FHIR.string`, `System.Integer`). */
export interface TypeSpecifier {
  namespace?: string;
  name: string;
  pos: number;
}

/** Any expression node. */
export type ExprNode =
  | LiteralNode
  | MemberNode
  | CallNode
  | InvokeNode
  | IndexerNode
  | SpecialNode
  | EnvNode
  | UnaryNode
  | BinaryNode
  | TypeOpNode;
