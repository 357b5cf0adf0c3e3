/**
 * A small table of real foods with typical per-serving nutrient values (rounded from common food
 * composition tables, e.g. USDA FoodData Central standard-reference entries) and the meals they suit.
 * It is the content of our food code system (SYSTEMS.food) and feeds the synthetic data generator.
 *
 * @module
 */

import type { MealType } from "./profile.ts";

/** One food of the table: nutrients are per serving of `serving` `unit`. */
export interface Food {
  /** Code in SYSTEMS.food. */
  readonly code: string;
  /** Human-readable name (CodeableConcept.text). */
  readonly name: string;
  /** Serving size. */
  readonly serving: number;
  /** UCUM unit of the serving: grams for solids, millilitres for drinks. */
  readonly unit: "g" | "mL";
  /** Energy per serving, kcal. */
  readonly kcal: number;
  /** Protein per serving, g. */
  readonly protein: number;
  /** Carbohydrate (by difference) per serving, g. */
  readonly carbohydrate: number;
  /** Fat per serving, g. */
  readonly fat: number;
  /** Meals the food is typically eaten at. */
  readonly meals: readonly MealType[];
}

const B: MealType = "breakfast";
const L: MealType = "lunch";
const D: MealType = "dinner";
const S: MealType = "snack";

function f(
  code: string,
  name: string,
  serving: number,
  unit: "g" | "mL",
  kcal: number,
  protein: number,
  carbohydrate: number,
  fat: number,
  meals: MealType[],
): Food {
  return Object.freeze({
    code,
    name,
    serving,
    unit,
    kcal,
    protein,
    carbohydrate,
    fat,
    meals: Object.freeze(meals),
  });
}

/** The food table (45 foods). */
export const FOODS: readonly Food[] = Object.freeze([
  f("oatmeal-cooked", "Oatmeal, cooked with water", 234, "g", 166, 5.9, 28.1, 3.6, [B]),
  f("greek-yogurt-nonfat", "Greek yogurt, plain, nonfat", 170, "g", 100, 17.3, 6.1, 0.7, [B, S]),
  f("bread-whole-wheat", "Whole-wheat bread, 1 slice", 32, "g", 81, 4.0, 13.8, 1.1, [B, L]),
  f("egg-boiled", "Egg, hard-boiled, large", 50, "g", 78, 6.3, 0.6, 5.3, [B, L]),
  f("banana", "Banana, raw, medium", 118, "g", 105, 1.3, 27.0, 0.4, [B, S]),
  f("milk-2pct", "Milk, reduced fat 2%", 250, "mL", 122, 8.1, 11.7, 4.8, [B, S]),
  f("orange-juice", "Orange juice", 248, "mL", 112, 1.7, 25.8, 0.5, [B]),
  f("corn-flakes", "Corn flakes cereal", 28, "g", 101, 2.0, 23.6, 0.1, [B]),
  f("peanut-butter", "Peanut butter, smooth, 2 tbsp", 32, "g", 188, 8.0, 6.3, 16.0, [B, S]),
  f("blueberries", "Blueberries, raw", 148, "g", 84, 1.1, 21.4, 0.5, [B, S]),
  f("coffee-black", "Coffee, brewed, black", 240, "mL", 2, 0.3, 0, 0, [B, L, S]),
  f("croissant", "Croissant, butter", 57, "g", 231, 4.7, 26.1, 12.0, [B]),
  f("cheddar", "Cheddar cheese", 28, "g", 113, 7.0, 0.4, 9.3, [B, L, S]),
  f("chicken-breast-roasted", "Chicken breast, roasted, skinless", 120, "g", 198, 37.2, 0, 4.3, [L, D]),
  f("salmon-baked", "Atlantic salmon, baked", 150, "g", 309, 33.2, 0, 18.5, [D]),
  f("brown-rice", "Brown rice, cooked", 195, "g", 218, 4.5, 45.8, 1.6, [L, D]),
  f("white-rice", "White rice, cooked", 158, "g", 205, 4.3, 44.5, 0.4, [L, D]),
  f("spaghetti", "Spaghetti, cooked", 140, "g", 221, 8.1, 43.2, 1.3, [L, D]),
  f("marinara", "Marinara sauce", 125, "g", 66, 2.0, 10.0, 2.0, [L, D]),
  f("lentils", "Lentils, boiled", 198, "g", 230, 17.9, 39.9, 0.8, [L, D]),
  f("green-salad", "Mixed green salad with vinaigrette", 150, "g", 120, 1.5, 6.0, 10.0, [L, D]),
  f("broccoli-steamed", "Broccoli, steamed", 156, "g", 55, 3.7, 11.2, 0.6, [L, D]),
  f("baked-potato", "Potato, baked, with skin", 173, "g", 161, 4.3, 36.6, 0.2, [L, D]),
  f("sirloin-grilled", "Beef sirloin steak, grilled", 150, "g", 310, 45.0, 0, 14.3, [D]),
  f("turkey-sandwich", "Turkey sandwich on whole-wheat bread", 200, "g", 360, 24.0, 40.0, 11.0, [L]),
  f("pizza-cheese", "Cheese pizza, 1 slice", 107, "g", 285, 12.2, 35.7, 10.4, [L, D]),
  f("hamburger", "Hamburger with bun", 226, "g", 540, 34.0, 40.0, 27.0, [L, D]),
  f("caesar-salad-chicken", "Caesar salad with chicken", 300, "g", 440, 34.0, 14.0, 28.0, [L, D]),
  f("tofu-stir-fry", "Tofu and vegetable stir-fry", 300, "g", 330, 20.0, 22.0, 18.0, [L, D]),
  f("chicken-curry", "Chicken curry", 250, "g", 380, 28.0, 12.0, 24.0, [D]),
  f("vegetable-soup", "Vegetable soup", 245, "g", 98, 3.5, 16.0, 2.2, [L, D]),
  f("hummus", "Hummus", 60, "g", 100, 4.7, 8.6, 5.8, [L, S]),
  f("pita-whole-wheat", "Whole-wheat pita bread", 64, "g", 170, 6.3, 35.2, 1.7, [L]),
  f("tuna-canned", "Tuna, canned in water, drained", 85, "g", 73, 16.5, 0, 0.8, [L]),
  f("quinoa", "Quinoa, cooked", 185, "g", 222, 8.1, 39.4, 3.6, [L, D]),
  f("apple", "Apple, raw, medium", 182, "g", 95, 0.5, 25.1, 0.3, [S]),
  f("almonds", "Almonds, raw", 28, "g", 164, 6.0, 6.1, 14.2, [S]),
  f("dark-chocolate", "Dark chocolate, 70-85% cacao", 28, "g", 170, 2.2, 13.0, 12.1, [S]),
  f("carrot-sticks", "Carrots, raw", 100, "g", 41, 0.9, 9.6, 0.2, [L, S]),
  f("potato-chips", "Potato chips", 28, "g", 152, 1.8, 15.0, 9.8, [S]),
  f("granola-bar", "Granola bar", 42, "g", 190, 4.0, 29.0, 7.0, [S]),
  f("orange", "Orange, raw, medium", 131, "g", 62, 1.2, 15.4, 0.2, [S]),
  f("cottage-cheese", "Cottage cheese, low-fat 2%", 113, "g", 92, 11.8, 5.0, 2.6, [B, S]),
  f("cola", "Cola soft drink", 355, "mL", 140, 0, 39.0, 0, [L, D, S]),
  f("green-tea", "Green tea, brewed", 240, "mL", 2, 0.5, 0, 0, [B, S]),
]);

/** Foods by code. */
export const FOODS_BY_CODE: ReadonlyMap<string, Food> = new Map(FOODS.map((x) => [x.code, x]));

/** Atwater estimate of energy from macronutrients: 4 kcal/g protein and carbohydrate, 9 kcal/g fat. */
export function atwaterKcal(protein: number, carbohydrate: number, fat: number): number {
  return 4 * protein + 4 * carbohydrate + 9 * fat;
}

/**
 * Whether stated energy and the Atwater estimate agree within the tolerance the validator uses (fiber,
 * rounding and polyols make real labels differ): within 40 kcal or 30% of the larger value.
 */
export function energyConsistent(kcal: number, protein: number, carbohydrate: number, fat: number): boolean {
  const est = atwaterKcal(protein, carbohydrate, fat);
  return Math.abs(kcal - est) <= Math.max(40, 0.3 * Math.max(kcal, est));
}
