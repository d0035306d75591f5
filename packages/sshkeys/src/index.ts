import type { Context, ServiceSchema } from "moleculer";
import { ARTIFACT_ID_PARAM, BOOLEAN_PARAM, DataTypes, invalid, textRegistryMixin } from "@clusterplatform/core";

const PUBLIC_KEY = /^(ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?\r?\n?$/;
const PRIVATE_KEY = /^-----BEGIN (OPENSSH|RSA|EC|DSA|ENCRYPTED)? ?PRIVATE KEY-----\r?\n[\s\S]+\r?\n-----END (OPENSSH|RSA|EC|DSA|ENCRYPTED)? ?PRIVATE KEY-----\r?\n?$/;

interface KeyRow {
	text?: string;
	private: boolean;
}

/**
 * /api/sshkeys: SSH keys by site (artifactId). Public keys go to nodes' authorized_keys; private
 * keys let a distributor reach its nodes. Lists never carry private key text.
 */
export const SshkeysService: ServiceSchema = {
	name: "sshkeys",
	mixins: [
		textRegistryMixin("sshkeys", {
			fields: {
				artifactId: { type: DataTypes.STRING(253), allowNull: false },
				private: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: false },
			},
			params: { artifactId: ARTIFACT_ID_PARAM, private: { ...BOOLEAN_PARAM, default: false } },
		}),
	],
	hooks: {
		before: {
			create(ctx: Context<{ text: string; private: boolean }>) {
				const { text } = ctx.params;
				if (ctx.params.private && !PRIVATE_KEY.test(text)) invalid("text", "is not a PEM/OpenSSH private key (-----BEGIN … PRIVATE KEY-----)");
				if (!ctx.params.private && !PUBLIC_KEY.test(text)) invalid("text", "is not an OpenSSH public key line (e.g. \"ssh-ed25519 AAAA… comment\")");
			},
		},
		after: {
			list(_ctx: Context, page: { rows: KeyRow[] }) {
				page.rows = page.rows.map(({ text, ...row }) => (row.private ? row : { ...row, text }));
				return page;
			},
		},
	},
};

export default SshkeysService;
