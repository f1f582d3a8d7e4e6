import { describe, expect, it } from "vitest";
import { ChatTemplateError, renderChat } from "./chat-template.ts";
import { ModelFormatError } from "#core/model/errors.ts";

const CHATML =
  "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

describe("renderChat", () => {
  it("renders messages and the generation prompt", () => {
    const messages = [
      { role: "system", content: "Be brief." },
      { role: "user", content: "2+2?" },
    ];
    expect(renderChat(CHATML, messages)).toBe("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n");
    expect(renderChat(CHATML, messages, { addGenerationPrompt: true })).toMatch(/<\|im_start\|>assistant\n$/);
  });

  it("passes bos and eos tokens to the template", () => {
    const template = "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}";
    expect(renderChat(template, [{ role: "user", content: "a" }, { role: "assistant", content: "b" }], { bosToken: "<s>", eosToken: "</s>" })).toBe(
      "<s>a</s>b</s>",
    );
  });

  it("says when the model has no chat template", () => {
    for (const missing of [null, undefined, ""]) {
      const err = (() => {
        try {
          renderChat(missing, [{ role: "user", content: "x" }], { source: "m/tokenizer_config.json" });
        } catch (e) {
          return e as ModelFormatError;
        }
      })();
      expect(err).toBeInstanceOf(ModelFormatError);
      expect(err!.file).toBe("m/tokenizer_config.json");
      expect(err!.problem).toMatch(/the model has no chat template/);
    }
  });

  it("names a template that does not parse and one that raises", () => {
    expect(() => renderChat("{% for m in messages %}", [], { source: "t.json" })).toThrow(/t\.json: chat template does not parse/);
    expect(() => renderChat("{{ raise_exception('only user turns') }}", [{ role: "user", content: "x" }])).toThrow(ChatTemplateError);
    expect(() => renderChat(CHATML, [{ role: "user" } as never])).toThrow(/message 0 needs string "role" and "content"/);
  });
});
